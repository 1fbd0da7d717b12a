"""The train task's operators, without an engine or a cluster: what they would start, and their errors.

A real Docker engine runs them in ``tests/integration/test_docker_training.py``; no cluster is reachable here,
so the Kubernetes pod is checked as the operator renders it.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from retrainer import training
from retrainer.config import ProjectConfig, parse_config
from retrainer.tracking import Tracking

MLFLOW_URL = "http://127.0.0.1:5000"


@pytest.fixture(autouse=True)
def mlflow_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operators' MLflow server: the ``mlflow_default`` connection only, as on a worker."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", f'{{"conn_type": "http", "host": "{MLFLOW_URL}"}}')


def _project(synth: SimpleNamespace, tmp_path: Path, **section: Any) -> ProjectConfig:
    document = synth.config_dict(estimator="xgboost")
    document["training"] = section
    return parse_config(document, tmp_path)


def trainer_operator(project: ProjectConfig, launch: dict[str, Any]) -> Any:
    from retrainer_provider.operators import trainer_operator  # on sys.path once the Airflow home is set up

    return trainer_operator(project, launch)


def _launch(project: ProjectConfig) -> dict[str, Any]:
    environment, _ = training.trainer_environment(project, Tracking(MLFLOW_URL), {})
    command = training.trainer_command("2024-02-05T03:00:00+00:00", "c1", trigger="scheduled")
    return training.TrainerLaunch(command, environment, {}, ["2024-01-29"], "c1").to_xcom()


def test_the_local_backend_runs_a_subprocess(synth: SimpleNamespace, tmp_path: Path) -> None:
    project = _project(synth, tmp_path)
    operator = trainer_operator(project, _launch(project))
    assert type(operator).__name__ == "TrainerSubprocessOperator"
    assert operator.execution_timeout.total_seconds() == 3600


def test_the_docker_backend_limits_mounts_and_cleans_up(synth: SimpleNamespace, tmp_path: Path) -> None:
    project = _project(synth, tmp_path, backend="docker", image="team/trainer:7", cpus=1.5, memory="3g")
    operator = trainer_operator(project, _launch(project))
    assert type(operator).__name__ == "TrainerDockerOperator"
    assert operator.image == "team/trainer:7"
    assert operator.mem_limit == 3 * 1024**3
    assert operator.network_mode == "host"  # reaches an MLflow server on the host
    assert operator.auto_remove == "success"  # a failed container is inspected, then removed
    [mount] = operator.mounts
    assert mount["Target"] == mount["Source"] == project.data.root_uri
    assert mount["ReadOnly"] is True
    assert operator.device_requests == []
    assert "launch" in operator.template_fields


def test_the_docker_backend_sets_hard_limits_on_the_container(synth: SimpleNamespace, tmp_path: Path) -> None:
    from docker import APIClient

    project = _project(synth, tmp_path, backend="docker", cpus=1.5, memory="3g")
    operator = trainer_operator(project, _launch(project))
    operator.hook.__dict__["api_client"] = APIClient(base_url="unix:///nonexistent.sock", version="1.43")
    host_config = operator.cli.create_host_config(mem_limit=operator.mem_limit, cpu_shares=1536)
    assert host_config["NanoCpus"] == 1_500_000_000  # a hard limit, not only a relative weight
    assert host_config["Memory"] == host_config["MemorySwap"] == 3 * 1024**3  # no swap beyond the limit


def test_cuda_requests_the_gpus_from_docker(synth: SimpleNamespace, tmp_path: Path) -> None:
    project = _project(synth, tmp_path, backend="docker", device="cuda")
    [request] = trainer_operator(project, _launch(project)).device_requests
    assert request["Count"] == -1 and request["Capabilities"] == [["gpu"]]


def test_an_unreachable_engine_fails_with_an_error_that_says_so(
    synth: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.exceptions import AirflowException

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    project = _project(synth, tmp_path, backend="docker")
    operator = trainer_operator(project, _launch(project))
    with pytest.raises(AirflowException, match=r"no Docker engine answers at unix://.*no-engine\.sock") as error:
        operator._engine()
    assert "training.backend: local" in str(error.value)


def test_the_kubernetes_pod_spec(synth: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "never-in-a-pod-spec")
    project = _project(
        synth,
        tmp_path,
        backend="kubernetes",
        image="registry.example/trainer:7",
        cpus=2,
        memory="6Gi",
        device="cuda",
        kubernetes={
            "namespace": "ml",
            "service_account": "trainer",
            "data_volume_claim": "retrainer-data",
            "node_selector": {"pool": "gpu"},
            "env_from_secret": "retrainer-credentials",
        },
    )
    operator = trainer_operator(project, _launch(project))
    pod = operator.build_pod_request_obj(dry_run=True)
    spec = pod.spec
    [trainer] = [c for c in spec.containers if c.name == "base"]
    assert pod.metadata.namespace == "ml"
    assert pod.metadata.name.startswith("train-synthetic-sales")
    assert trainer.image == "registry.example/trainer:7"
    assert trainer.command == ["retrainer"]
    assert trainer.args[:2] == ["train", "--cutoff"]
    assert trainer.args[-2:] == ["--result-file", "/airflow/xcom/return.json"]
    assert any(c.name == "airflow-xcom-sidecar" for c in spec.containers)  # reads the result file
    assert trainer.resources.limits == {"cpu": "2000m", "memory": "6144Mi", "nvidia.com/gpu": "1"}
    assert trainer.resources.requests == {"cpu": "2000m", "memory": "6144Mi"}
    env = {e.name: e.value for e in trainer.env}
    assert training.TrainerLaunch([], env).project() == project
    assert env[training.BACKEND_ENV] == "kubernetes"
    assert env["MLFLOW_TRACKING_URI"] == MLFLOW_URL  # the planning task's connection, not the worker's env
    assert "never-in-a-pod-spec" not in str(pod.to_dict())
    assert trainer.env_from[0].secret_ref.name == "retrainer-credentials"
    [volume] = [v for v in spec.volumes if v.name == "data"]  # besides the XCom sidecar's
    assert volume.persistent_volume_claim.claim_name == "retrainer-data"
    assert volume.persistent_volume_claim.read_only is True
    [mount] = [m for m in trainer.volume_mounts if m.name == "data"]
    assert mount.mount_path == project.data.root_uri and mount.read_only is True
    assert spec.node_selector == {"pool": "gpu"}
    assert spec.service_account_name == "trainer"
    assert trainer.security_context.run_as_non_root is True
    assert spec.restart_policy == "Never"


def _pod_ends(
    operator: Any, monkeypatch: pytest.MonkeyPatch, exit_code: int | None, reason: str | None = None
) -> tuple[Any, Any]:
    """Make the operator's pod end as given, as the cluster would report it; returns (pod, pod manager)."""
    from unittest import mock

    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    pod = operator.build_pod_request_obj(dry_run=True)
    ended = None if exit_code is None else k8s.V1ContainerStateTerminated(exit_code=exit_code, reason=reason)
    status = k8s.V1ContainerStatus(
        name="base",
        image=operator.image,
        image_id="registry.example/trainer@sha256:0123" if ended else "",
        ready=False,
        restart_count=0,
        state=k8s.V1ContainerState(terminated=ended),
    )
    phase = "Succeeded" if exit_code == 0 else "Failed"
    remote = k8s.V1Pod(metadata=pod.metadata, status=k8s.V1PodStatus(phase=phase, container_statuses=[status]))
    manager = mock.MagicMock()
    manager.read_pod_logs.return_value = [b"loading 4 batches\n", b"fitting xgboost.XGBRegressor\n"]
    operator.__dict__["pod_manager"] = manager  # no cluster here: what its API would answer

    def pod_ended(self: Any, context: Any) -> dict[str, Any]:  # KubernetesPodOperator, once the pod has ended
        self.cleanup(pod, remote, context=context)
        return {
            "run_id": "run-1",
            "model_uri": "models:/m-1",
            "window": ["2024-01-29"],
            "holdout_start": "2024-02-01T00:00:00+00:00",
            "train_rows": 10,
            "holdout_rows": 2,
            "train_metrics": {"rmse": 1.0},
        }

    monkeypatch.setattr(KubernetesPodOperator, "execute", pod_ended)
    return pod, manager


@pytest.mark.parametrize(
    ("exit_code", "reason", "says"),
    [
        (137, "OOMKilled", "was killed for memory (exit code 137, limit 1Gi): raise training.memory"),
        (1, "Error", "exited with code 1"),
        (None, None, "the trainer pod failed; no model was registered (its log lines are above): Pod train-"),
    ],
)
def test_a_failed_trainer_pod_says_why_with_its_last_lines(
    synth: SimpleNamespace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    exit_code: int | None,
    reason: str | None,
    says: str,
) -> None:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    project = _project(synth, tmp_path, backend="kubernetes", memory="1Gi", kubernetes={"data_volume_claim": "d"})
    operator = trainer_operator(project, _launch(project))
    pod, manager = _pod_ends(operator, monkeypatch, exit_code, reason)
    closed: list[str] = []
    monkeypatch.setattr(
        training, "close_abandoned_runs", lambda project, tracking, cycle_id, why: closed.append(why) or []
    )
    with pytest.raises(AirflowException) as error:
        operator.execute({})
    message = str(error.value)
    assert says in message
    assert [message.startswith(why) for why in closed] == [True]  # the unfinished run is closed saying why
    # Killed for memory at its limit, a retry would die the same way: the task fails without spending them.
    assert isinstance(error.value, AirflowFailException) == (reason == "OOMKilled")
    if exit_code is not None:
        assert closed[0].endswith("  | loading 4 batches\n  | fitting xgboost.XGBRegressor")
        manager.read_pod_logs.assert_called_once_with(pod, "base", tail_lines=30, follow=False)
    assert "remote_pod" not in message  # the pod dump stays out of the task's error


def test_a_trainer_pod_records_the_image_digest_the_kubelet_pulled(
    synth: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(synth, tmp_path, backend="kubernetes", kubernetes={"data_volume_claim": "d"})
    operator = trainer_operator(project, _launch(project))
    _, manager = _pod_ends(operator, monkeypatch, 0)
    recorded: list[tuple[str, str]] = []
    monkeypatch.setattr(
        training,
        "record_image_id",
        lambda tracking, run_id, image_id: recorded.append((tracking.uri, run_id, image_id)),
    )
    assert operator.execute({})["run_id"] == "run-1"
    assert recorded == [(MLFLOW_URL, "run-1", "registry.example/trainer@sha256:0123")]
    manager.read_pod_logs.assert_not_called()
    manager.delete_pod.assert_called_once()  # a pod that succeeded is deleted


def test_a_named_volume_can_hold_the_data_as_in_docker_compose() -> None:
    from retrainer_provider.operators.trainer_docker import data_mounts

    assert data_mounts(None) == []
    [bind] = data_mounts("/srv/data/flights")
    assert (bind["Type"], bind["Source"], bind["Target"], bind["ReadOnly"]) == (
        "bind",
        "/srv/data/flights",
        "/srv/data/flights",
        True,
    )
    [volume] = data_mounts("/data/projects/flights", "retrainer_platform-data:/data/")
    assert (volume["Type"], volume["Source"], volume["Target"], volume["ReadOnly"]) == (
        "volume",
        "retrainer_platform-data",
        "/data",
        True,
    )
    with pytest.raises(ValueError, match="not under /mnt"):
        data_mounts("/data/projects/flights", "vol:/mnt")
    with pytest.raises(ValueError, match="expected NAME:/mount/point"):
        data_mounts("/data/projects/flights", "just-a-name")


def test_a_trainer_pod_left_running_by_an_earlier_try_is_deleted_before_the_next_starts(
    synth: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each try runs its own pod under its own lease; an orphan of a killed worker would train beside it."""
    from unittest import mock

    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    project = _project(synth, tmp_path, backend="kubernetes", kubernetes={"data_volume_claim": "d"})
    launch = _launch(project)
    command = training.trainer_command("2024-02-05T03:00:00+00:00", "c1", trigger="scheduled", lease="ab12")
    operator = trainer_operator(project, {**launch, "command": command, "lease": "ab12"})
    assert operator.reattach_on_restart is False
    ti = SimpleNamespace(dag_id="retrain_p", task_id="train", try_number=2, map_index=-1)
    context = {"ti": ti, "run_id": "manual__1", "dag": SimpleNamespace()}
    request = operator.build_pod_request_obj(context, dry_run=True)
    args = request.spec.containers[0].args
    assert args[args.index("--lease") + 1] == "ab12-try2"
    assert request.metadata.labels["try_number"] == "2"

    def pod(name: str, phase: str, try_number: str) -> k8s.V1Pod:
        return k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(name=name, labels={"try_number": try_number}),
            status=k8s.V1PodStatus(phase=phase),
        )

    orphan, failed = pod("train-1", "Running", "1"), pod("train-0", "Failed", "1")
    api, manager = mock.MagicMock(), mock.MagicMock()
    api.list_namespaced_pod.return_value = k8s.V1PodList(items=[orphan, failed])
    operator.__dict__.update(client=api, pod_manager=manager)
    monkeypatch.setattr(KubernetesPodOperator, "get_or_create_pod", lambda self, request, context: request)

    assert operator.get_or_create_pod(request, context) is request
    [call] = api.list_namespaced_pod.call_args_list
    selector = call.kwargs["label_selector"]  # this task instance's pods, whatever their try
    assert "dag_id=retrain_p" in selector and "run_id=manual__1" in selector and "try_number" not in selector
    manager.delete_pod.assert_called_once_with(orphan)  # a failed pod is kept for kubectl describe
