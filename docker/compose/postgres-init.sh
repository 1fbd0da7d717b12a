#!/usr/bin/env bash
# Run once by the postgres image, on the first start with an empty data volume (/docker-entrypoint-initdb.d):
# one database per component, each owned by its own login role, which no other role may connect to.
# Changing a password later: ALTER ROLE ... PASSWORD in psql, then the matching variable in .env.
# Works whether the entrypoint sources this file or runs it; it leaves the entrypoint's shell options alone.
set -e

psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    -v airflow_password="${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD is not set}" \
    -v mlflow_password="${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set}" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
REVOKE ALL ON DATABASE airflow FROM PUBLIC;

CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
SQL
