"""The ``docker`` training backend: the trainer image on a Docker engine, through Airflow's Docker provider."""

from __future__ import annotations

import json
import os
from functools import cached_property
from typing import Any

from airflow.providers.docker.exceptions import DockerContainerFailedException
from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk.exceptions import AirflowException
from docker.types import DeviceRequest, Mount

from retrainer.config import TrainingConfig
from retrainer_provider.hooks.mlflow import MlflowHook

NETWORK_ENV = "RETRAINER_DOCKER_NETWORK"
DATA_VOLUME_ENV = "RETRAINER_DOCKER_DATA_VOLUME"


def data_mounts(data_root: str | None, volume: str | None = None) -> list[Mount]:
    """The read-only mount that shows the trainer the data root at the path the worker sees it.

    Args:
        data_root: The local data root, or None when the data is on S3 (nothing to mount).
        volume: ``NAME:/path``, a named volume the worker has mounted at ``/path`` (as in docker-compose, where
            the worker's paths are not the engine host's); by default the data root is bind-mounted from the
            host, which must then be the worker's host.

    Raises:
        ValueError: ``volume`` is malformed or does not hold the data root.
    """
    if data_root is None:
        return []
    if not volume:
        return [Mount(target=data_root, source=data_root, type="bind", read_only=True)]
    name, _, mount_point = volume.partition(":")
    mount_point = mount_point.rstrip("/")
    if not name or not mount_point.startswith("/"):
        raise ValueError(f"{DATA_VOLUME_ENV}={volume!r}: expected NAME:/mount/point, e.g. retrainer-data:/data")
    if data_root != mount_point and not data_root.startswith(mount_point + "/"):
        raise ValueError(f"{DATA_VOLUME_ENV}={volume!r}: the data root {data_root} is not under {mount_point}")
    return [Mount(target=mount_point, source=name, type="volume", read_only=True)]


def trainer_labels(launch: Any) -> dict[str, str]:
    """The labels of a trainer's container: which project, cycle and try it trains for."""
    from retrainer.training import lease_try

    return {
        "retrainer.project": launch.project().name,
        "retrainer.cycle_id": launch.cycle_id,
        "retrainer.step": "train",
        "retrainer.try": str(lease_try(launch.lease)),
    }


class _TrainerEngine:
    """The engine's API client, with hard limits on the trainer's container and a record of how it ended.

    - DockerOperator's ``cpus`` only sets ``cpu_shares``, a relative weight that limits nothing on an idle host;
      ``nano_cpus`` caps the container at that many CPUs, like ``docker run --cpus``. Swap equal to the memory
      limit means none beyond it, so ``training.memory`` is what the trainer gets.
    - The container's final state (exit code, killed for memory) is read as soon as it exits, before
      ``auto_remove`` deletes it.
    """

    def __init__(self, client: Any, training: TrainingConfig) -> None:
        self._client = client
        self._limits = {"nano_cpus": int(training.cpus * 1e9), "memswap_limit": training.memory_bytes}
        self.final_state: dict[str, Any] = {}

    def create_host_config(self, **kwargs: Any) -> Any:
        return self._client.create_host_config(**self._limits, **kwargs)

    def wait(self, container: Any, *args: Any, **kwargs: Any) -> Any:
        result = self._client.wait(container, *args, **kwargs)
        self.final_state = self._client.inspect_container(container)["State"]
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class TrainerDockerOperator(DockerOperator):
    """Runs the trainer image with the planned ``retrainer train`` command on a Docker engine.

    - **Engine**: ``DOCKER_HOST`` of the worker (default ``unix:///var/run/docker.sock``). An unreachable engine
      fails the task with an error that says so.
    - **Network**: ``RETRAINER_DOCKER_NETWORK`` (default ``host``, which reaches an MLflow server on the host;
      in docker-compose, the compose network).
    - **Data**: a local data root is bind-mounted read-only at the same path (or, with
      ``RETRAINER_DOCKER_DATA_VOLUME=NAME:/path``, the named volume holding it, as in docker-compose); S3 is read
      with the worker's credentials, passed as private environment variables.
    - **Limits**: ``training.cpus`` (a hard limit) and ``training.memory``; ``device: cuda`` requests the GPUs.
    - **Result**: the trainer writes it to a file in the container, read back before the container is removed.
    - **Provenance**: the image reference and id are passed to the trainer, which records them on the run (and
      promotion on the model version).
    - **MLflow**: the server of the ``mlflow_conn_id`` connection; its credentials go in privately.

    Args:
        launch: The planned launch (``TrainerLaunch.to_xcom()``, usually an XComArg).
        training: The project's training settings.
        data_root: The local data root to mount, or None when the data is on S3.
    """

    template_fields = (*DockerOperator.template_fields, "launch")
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        launch: Any,
        training: TrainingConfig,
        data_root: str | None,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        from retrainer.training import CONTAINER_RESULT_PATH

        super().__init__(
            image=training.image,
            network_mode=os.environ.get(NETWORK_ENV, "host"),
            mounts=data_mounts(data_root, os.environ.get(DATA_VOLUME_ENV)),
            cpus=training.cpus,
            mem_limit=training.memory_bytes,
            auto_remove="success",
            mount_tmp_dir=False,
            retrieve_output=True,
            retrieve_output_path=CONTAINER_RESULT_PATH,
            device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"]])] if training.device == "cuda" else [],
            **kwargs,
        )
        self.launch = launch
        self.training = training
        self.data_root = data_root
        self.mlflow_conn_id = mlflow_conn_id
        # The result file is JSON, not a pickle (DockerOperator reads it with this library).
        self.pickling_library = json

    @cached_property
    def cli(self) -> Any:
        return _TrainerEngine(self.hook.api_client, self.training)

    def execute(self, context: Any) -> dict[str, Any]:
        from retrainer.training import (
            CONTAINER_RESULT_PATH,
            IMAGE_ID_ENV,
            TrainerLaunch,
            launcher_lease,
            read_result,
        )
        from retrainer_provider.operators import try_number

        tracking = MlflowHook(self.mlflow_conn_id).get_tracking()
        launch = TrainerLaunch.from_xcom(self.launch, tracking).for_try(try_number(context))
        # The worker's settings, not those of the process that parsed the DAG.
        self.network_mode = os.environ.get(NETWORK_ENV, "host")
        try:
            self.mounts = data_mounts(self.data_root, os.environ.get(DATA_VOLUME_ENV))
        except ValueError as error:
            raise AirflowException(str(error)) from None
        client = self._engine()
        image_id = self._image_id(client)
        self.command = launch.command_with_result(CONTAINER_RESULT_PATH)
        self.environment = {**launch.environment, IMAGE_ID_ENV: image_id}
        self._private_environment = launch.secrets
        self.labels = trainer_labels(launch)
        self._stop_earlier_tries(client, launch)
        self.log.info(
            "training on %s in %s (%s), %.1f CPUs, %s memory, device %s",
            ", ".join(launch.window),
            self.image,
            image_id,
            self.training.cpus,
            self.training.memory,
            self.training.device,
        )
        try:
            with launcher_lease(launch, "docker launcher"):
                output = super().execute(context)
        except DockerContainerFailedException as error:
            raise self._failure(launch, tracking, list(error.logs or [])) from None
        return read_result(output, f"{CONTAINER_RESULT_PATH} of the container").to_json()

    def _stop_earlier_tries(self, client: Any, launch: Any) -> None:
        """Kill the trainers of earlier tries of this task still running: their launcher was killed outright.

        Airflow runs one try of a task at a time, so a running trainer of this project's cycle is an orphan;
        left alone it would train beside this try's (its run is closed as KILLED by this try's trainer).
        """
        labels = [f"{key}={value}" for key, value in trainer_labels(launch).items() if key != "retrainer.try"]
        for container in client.containers(filters={"label": labels, "status": "running"}):
            self.log.warning(
                "killing the trainer container %s of an earlier try (%s)",
                container["Id"][:12],
                container.get("Labels", {}).get("retrainer.try", "?"),
            )
            client.kill(container["Id"])

    def _engine(self) -> Any:
        """The engine's client; an unreachable engine is an error that says which URL and what to do."""
        try:
            client = self.hook.api_client
            client.ping()
        except Exception as error:
            raise AirflowException(
                f"training.backend is docker but no Docker engine answers at {self.docker_url} ({error}). "
                "Start the engine or point DOCKER_HOST at it, or set training.backend: local"
            ) from None
        return client

    def _image_id(self, client: Any) -> str:
        """The image's digest (or id, for a locally built image), pulling it first when it is missing."""
        from docker.errors import APIError, ImageNotFound

        try:
            details = client.inspect_image(self.image)
        except ImageNotFound:
            self.log.info("image %s is not on the engine: pulling it", self.image)
            try:
                client.pull(self.image)
                details = client.inspect_image(self.image)
            except APIError as error:
                raise AirflowException(
                    f"trainer image {self.image} is not on the engine at {self.docker_url} and cannot be pulled "
                    f"({error.explanation or error}): build it with `make trainer-image` or set training.image"
                ) from None
        digests = details.get("RepoDigests") or []
        return digests[0] if digests else details["Id"]

    def _failure(self, launch: Any, tracking: Any, logs: list[Any]) -> AirflowException:
        """Why the container failed (exit code, out of memory), with its last lines."""
        from retrainer.training import failure_message
        from retrainer_provider.operators import trainer_failed

        state = self.cli.final_state
        oom_killed = bool(state.get("OOMKilled"))
        message = failure_message(
            state.get("ExitCode"),
            logs,
            where=f"container {self.image}",
            oom_killed=oom_killed,
            memory=self.training.memory,
        )
        return trainer_failed(self.log, launch, tracking, message, retryable=not oom_killed)
