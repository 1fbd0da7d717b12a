#!/usr/bin/env bash
# The airflow-init service of docker-compose.yaml: run on every `docker compose up`, each step idempotent.
# It starts as root only to hand the shared volumes (created root-owned) to the platform user, then re-runs
# itself as that user, so no file Airflow writes later is root's.
set -euo pipefail

PLATFORM_UID=50000
AUTH_FILE="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?}"
LOG_DIR="${AIRFLOW__LOGGING__BASE_LOG_FOLDER:?}"

if [[ "$(id -u)" == 0 ]]; then
    # Not recursive: everything below is written by the platform user.
    chown "$PLATFORM_UID:0" "$LOG_DIR" "$(dirname "$AUTH_FILE")"
    chmod 775 "$LOG_DIR"
    chmod 700 "$(dirname "$AUTH_FILE")"
    exec setpriv --reuid="$PLATFORM_UID" --regid=0 --clear-groups env HOME=/home/retrainer bash "$0" "$@"
fi

echo "airflow-init: waiting for the metadata database"
airflow db check --retry 30 --retry-delay 2

echo "airflow-init: migrating the metadata database"
airflow db migrate

# One pool per project file (retrainer_<project>, 1 slot), so one project's runs never starve another's.
echo "airflow-init: creating the projects' pools"
retrainer airflow-pools --projects "${RETRAINER_PROJECTS_DIR:?}" > /tmp/pools.json
airflow pools import /tmp/pools.json

# The simple auth manager creates no users: it reads each configured user's password from this file (and
# would generate and print a random one for a user missing from it).
echo "airflow-init: writing the passwords of admin and of the tasks' user (retrainer)"
umask 077
python - "$AUTH_FILE" <<'PY'
import json
import os
import sys

with open(sys.argv[1], "w") as file:
    json.dump({"admin": os.environ["AIRFLOW_ADMIN_PASSWORD"], "retrainer": os.environ["AIRFLOW_TASKS_PASSWORD"]}, file)
PY
echo "airflow-init: done"
