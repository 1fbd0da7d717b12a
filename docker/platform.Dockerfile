# The platform image: Airflow, MLflow and the retrainer package with the locked dependencies.
# Build with a local base where no registry is reachable: --build-arg BASE_IMAGE=local/python-base
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 50000 retrainer
WORKDIR /opt/retrainer

COPY requirements.txt ./
# Hash-checked: the image holds exactly the lock (make sbom writes its SBOM from it).
RUN pip install --require-hashes -r requirements.txt

COPY pyproject.toml README.md ./
COPY include/ include/
RUN pip install --no-deps .

COPY dags/ dags/
COPY plugins/ plugins/
COPY projects/ projects/
COPY great_expectations/ great_expectations/
RUN chown -R retrainer /opt/retrainer
USER retrainer
