# Airflow-orchestrated ML retraining. `make` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= projects/flights.yaml
WEEKS ?= 9
CORRUPT_WEEK ?= 6
DRIFT_WEEK ?= 2013-06-24
PYTEST_ARGS ?=
# Rows a week of `make bench-scale`, and the sizes it also runs through Airflow.
SCALE_ROWS ?= 100000 1000000 10000000
SCALE_AIRFLOW_ROWS ?= 100000 1000000
# Waits of `make run`, generous by default; raise them on a slow machine (each failure names its setting).
STACK_TIMEOUT ?= 600
REPLAY_TIMEOUT ?= 3600
DRIFT_TIMEOUT ?= 900
HTTP_TIMEOUT ?= 60
TRAINER_IMAGE ?= retrainer/trainer
BASE_IMAGE ?= python:3.11-slim
CODE_VERSION := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

export RETRAINER_DATA_DIR ?= $(CURDIR)/data

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --require-hashes -r requirements.txt -r requirements-dev.txt
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv with the locked dependencies and the package

.PHONY: lock
lock: install ## Re-resolve requirements*.in into the pinned, hashed locks (installs check every hash)
	$(BIN)/uv pip compile --python-version 3.11 --generate-hashes requirements.in -o requirements.txt
	$(BIN)/uv pip compile --python-version 3.11 --generate-hashes requirements-dev.in -o requirements-dev.txt

.PHONY: run
run: install ## Start Airflow + MLflow, replay the demo weeks, land a drifted week, print the cycle table
	$(BIN)/retrainer stack up --timeout $(STACK_TIMEOUT)
	$(BIN)/retrainer demo land --config $(CONFIG) --weeks $(WEEKS) --corrupt-week $(CORRUPT_WEEK)
	$(BIN)/retrainer demo replay --config $(CONFIG) --timeout $(REPLAY_TIMEOUT) --http-timeout $(HTTP_TIMEOUT)
	$(BIN)/retrainer demo drift --config $(CONFIG) --week $(DRIFT_WEEK) --timeout $(DRIFT_TIMEOUT) --http-timeout $(HTTP_TIMEOUT)
	$(BIN)/retrainer report --config $(CONFIG) --reasons
	$(BIN)/retrainer stack status

.PHONY: up
up: install ## Start the embedded stack (Airflow UI, MLflow UI) without replaying anything
	$(BIN)/retrainer stack up --timeout $(STACK_TIMEOUT)

.PHONY: status
status: install ## Show URLs, health and credentials of the embedded stack
	$(BIN)/retrainer stack status

.PHONY: stop
stop: ## Stop everything `make run` / `make up` started
	@if test -x $(BIN)/retrainer; then $(BIN)/retrainer stack down; else echo "nothing to stop (no .venv)"; fi

.PHONY: test
test: install ## Lint, then run every test tier (unit, dags, data, model, integration, faults)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest --durations=40 $(PYTEST_ARGS)

.PHONY: test-fast
test-fast: install ## Every tier except the integration tests
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

.PHONY: lint
lint: install ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

.PHONY: format
format: install ## Format and fix imports
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: bench
bench: install ## Orchestration cost: one cycle through Airflow vs the same steps in one process
	$(BIN)/python bench/bench_cycle.py

.PHONY: bench-alerts
bench-alerts: install ## Alert -> first retrain task latency: asset events vs a 60 s polling sensor (~15 min)
	$(BIN)/python bench/bench_alert_latency.py

.PHONY: bench-drift
bench-drift: install ## The drift step's verdicts (NumPy) against the NumPy floor and Evidently, 100k and 1M rows a side
	$(BIN)/python bench/bench_drift.py --rows 100000 1000000

.PHONY: bench-scale
bench-scale: install ## The whole cycle at 100k, 1M and 10M rows a week: step times, peak memory, linear fit, Airflow ratio (~1 h)
	$(BIN)/python bench/bench_scale.py --rows $(SCALE_ROWS) --airflow-rows $(SCALE_AIRFLOW_ROWS)

.PHONY: bench-gpu
bench-gpu: install ## xgboost on the GPU vs the CPU for the same data, ~1M and 4M rows (needs an NVIDIA GPU)
	$(BIN)/python bench/bench_gpu.py

.PHONY: bench-catalog
bench-catalog: install ## A step's catalog reads with 10 vs 500 weeks landed, on a real S3 server (SeaweedFS)
	$(BIN)/python bench/bench_catalog.py

.PHONY: bench-gate
bench-gate: install ## The promotion gate's cost (bootstrap, compatibility, slices) at 10k-1M held-out rows, as a share of the cycle
	$(BIN)/python bench/bench_gate.py

.PHONY: bench-training
bench-training: install ## Training in a container vs in process, demo size and ~1M rows (needs DOCKER_HOST and make trainer-image)
	$(BIN)/python bench/bench_training.py

wheels/.complete: docker/trainer-requirements.txt
	rm -rf wheels && mkdir -p wheels
	$(BIN)/python -m pip download --quiet --only-binary=:all: --require-hashes -r docker/trainer-requirements.txt -d wheels
	touch $@

.PHONY: trainer-image
trainer-image: install wheels/.complete ## Build the trainer image offline from a wheelhouse (BASE_IMAGE=local/python-base without a registry)
	docker build -f docker/trainer.Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) \
		--build-arg CODE_VERSION=$(CODE_VERSION) -t $(TRAINER_IMAGE):$(CODE_VERSION) -t $(TRAINER_IMAGE):latest .
	$(MAKE) --no-print-directory sbom/trainer.cdx.json

.PHONY: trainer-lock
trainer-lock: install ## Re-pin the trainer image's requirements against the platform's lock
	$(BIN)/uv pip compile --python-version 3.11 --generate-hashes docker/trainer-requirements.in -c requirements.txt \
		-o docker/trainer-requirements.txt

# The images install their lock with --require-hashes, so the lock is exactly what they hold: the SBOM is
# written from it (CycloneDX 1.6 JSON, every component with its hashes).
sbom/platform.cdx.json: requirements.txt pyproject.toml
	@mkdir -p sbom
	PYTHONWARNINGS=ignore::UserWarning $(BIN)/cyclonedx-py requirements --pyproject pyproject.toml --output-reproducible --output-format JSON \
		--output-file $@ requirements.txt

sbom/trainer.cdx.json: docker/trainer-requirements.txt pyproject.toml
	@mkdir -p sbom
	PYTHONWARNINGS=ignore::UserWarning $(BIN)/cyclonedx-py requirements --pyproject pyproject.toml --output-reproducible --output-format JSON \
		--output-file $@ docker/trainer-requirements.txt

.PHONY: sbom
sbom: install sbom/platform.cdx.json sbom/trainer.cdx.json ## SBOMs of the platform and trainer images (sbom/*.cdx.json)

.PHONY: clean-state
clean-state: stop ## Delete demo data and the embedded stack's state (Airflow and MLflow databases)
	rm -rf data .stack great_expectations/uncommitted
