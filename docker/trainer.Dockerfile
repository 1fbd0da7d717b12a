# The trainer image: the training step only (`retrainer train`), with its own pinned dependencies
# (docker/trainer-requirements.txt, a subset of the platform's lock) and no scheduler.
#
#   make trainer-image            builds retrainer/trainer:<code version> from a wheelhouse (offline build)
#   docker build -f docker/trainer.Dockerfile -t retrainer/trainer .   the usual way, where PyPI is reachable
#
# Where no registry is reachable, build on a local base: --build-arg BASE_IMAGE=local/python-base
# (scripts/docker-engine.sh base-image makes one from Debian's archive).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE} AS build

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
# A venv: the same on the official image and on a bare Debian base whose python3 has no pip.
RUN python -m venv /opt/venv

# With `make trainer-image` the locked wheels come from wheels/ (an offline, reproducible build); without a
# wheels/ folder they come from PyPI. This stage is thrown away, so the wheels do not weigh on the image.
COPY docker/trainer-requirements.txt wheel[s] /tmp/build/
# --require-hashes: every package is the one the lock names, by hash (setuptools included, it is in the lock).
RUN if ls /tmp/build/*.whl >/dev/null 2>&1; then \
        pip install --require-hashes --no-index --find-links /tmp/build -r /tmp/build/trainer-requirements.txt; \
    else \
        pip install --require-hashes -r /tmp/build/trainer-requirements.txt; \
    fi

COPY pyproject.toml README.md /opt/retrainer/
COPY include/ /opt/retrainer/include/
RUN pip install --no-deps --no-build-isolation /opt/retrainer


FROM ${BASE_IMAGE}
# No git in the image: MLflow should not warn on every run that it cannot record a commit.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 GIT_PYTHON_REFRESH=quiet PATH=/opt/venv/bin:$PATH
COPY --from=build /opt/venv /opt/venv
RUN useradd --create-home --uid 50000 trainer
USER trainer
WORKDIR /home/trainer
# The code version recorded on every model trained here; make trainer-image passes the git commit.
ARG CODE_VERSION=unknown
ENV RETRAINER_CODE_VERSION=${CODE_VERSION}
ENTRYPOINT ["retrainer"]
CMD ["train", "--help"]
