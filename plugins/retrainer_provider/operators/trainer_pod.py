"""The ``kubernetes`` training backend: the trainer image as a pod, through KubernetesPodOperator."""

from __future__ import annotations

from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowException
from kubernetes.client import models as k8s

from retrainer.config import TrainingConfig
from retrainer_provider.hooks.mlflow import MlflowHook


class TrainerPodOperator(KubernetesPodOperator):
    """Runs the trainer image with the planned ``retrainer train`` command as a pod.

    - **Cluster**: the Airflow connection ``kubernetes_default`` (in-cluster, a kube config...).
    - **Resources**: requests equal to limits (``training.cpus``, ``training.memory``), and one
      ``nvidia.com/gpu`` with ``device: cuda``; ``training.kubernetes.node_selector`` picks the node pool.
    - **Data**: on S3, or a local data root held by ``training.kubernetes.data_volume_claim``, mounted read-only
      at the same path. Credentials come from ``training.kubernetes.env_from_secret``, never from the worker.
    - **Result**: the trainer writes it to ``/airflow/xcom/return.json``, read by the XCom sidecar. The image
      digest the kubelet resolved is then recorded on the candidate run (``retrainer.trainer_image_id``).
    - The pod runs as non-root without privilege escalation and is deleted when it succeeds (a failed pod is
      kept for ``kubectl describe``).
    - **Failures**: the task fails with the trainer container's exit code, whether Kubernetes killed it for
      memory (``OOMKilled``), and its last log lines.

    Args:
        launch: The planned launch (``TrainerLaunch.to_xcom()``, usually an XComArg).
        training: The project's training settings.
        data_root: The local data root to mount from the claim, or None when the data is on S3.
        pod_name: Base name of the pods (a random suffix is added).
    """

    template_fields = (*KubernetesPodOperator.template_fields, "launch")
    ui_color = "#fdebd0"

    def __init__(
        self,
        *,
        launch: Any,
        training: TrainingConfig,
        data_root: str | None,
        pod_name: str,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        settings = training.kubernetes
        volumes, mounts = [], []
        if data_root and settings.data_volume_claim:
            volumes.append(
                k8s.V1Volume(
                    name="data",
                    persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                        claim_name=settings.data_volume_claim, read_only=True
                    ),
                )
            )
            mounts.append(k8s.V1VolumeMount(name="data", mount_path=data_root, read_only=True))
        super().__init__(
            name=pod_name.replace("_", "-"),
            namespace=settings.namespace,
            image=training.image,
            image_pull_policy="IfNotPresent",
            cmds=["retrainer"],
            container_resources=_resources(training),
            node_selector=settings.node_selector or None,
            service_account_name=settings.service_account,
            env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=settings.env_from_secret))]
            if settings.env_from_secret
            else None,
            volumes=volumes,
            volume_mounts=mounts,
            container_security_context=k8s.V1SecurityContext(
                run_as_non_root=True, allow_privilege_escalation=False
            ),
            do_xcom_push=True,
            get_logs=True,
            on_finish_action="delete_succeeded_pod",
            # Each try its own pod, with its own lease (a pod reattached to would train under an earlier try's);
            # a pod an earlier try left running is deleted first (get_or_create_pod).
            durable=False,
            log_pod_spec_on_failure=False,  # the task error says why the trainer failed, not the whole pod
            **kwargs,
        )
        self.launch = launch
        self.training = training
        self.mlflow_conn_id = mlflow_conn_id
        self.trainer_ended: k8s.V1ContainerStateTerminated | None = None
        self.trainer_tail: list[str | bytes] = []
        self.trainer_image_id = ""

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> k8s.V1Pod:
        """The pod, with the planned command and environment (rendered ``launch``)."""
        from retrainer.training import IMAGE_ID_ENV, POD_RESULT_PATH, TrainerLaunch
        from retrainer_provider.operators import try_number

        launch = TrainerLaunch.from_xcom(self.launch, environ={}).for_try(try_number(context or {}))
        self.arguments = launch.command_with_result(POD_RESULT_PATH)
        # The pod knows only the image reference; execute() records the digest once the kubelet resolved it.
        self.env_vars = [
            k8s.V1EnvVar(name=name, value=value)
            for name, value in {**launch.environment, IMAGE_ID_ENV: self.image}.items()
        ]
        return super().build_pod_request_obj(context, dry_run=dry_run)

    def get_or_create_pod(self, pod_request_obj: k8s.V1Pod, context: Any) -> k8s.V1Pod:
        """Delete the trainer pods of earlier tries still running (their launcher was killed), then create."""
        earlier = self.client.list_namespaced_pod(
            namespace=pod_request_obj.metadata.namespace,
            label_selector=self._build_find_pod_label_selector(context),
        ).items
        for pod in earlier:
            if pod.status is None or pod.status.phase not in ("Succeeded", "Failed"):
                self.log.warning(
                    "deleting the trainer pod %s of an earlier try (%s)",
                    pod.metadata.name,
                    (pod.metadata.labels or {}).get("try_number", "?"),
                )
                self.pod_manager.delete_pod(pod)
        return super().get_or_create_pod(pod_request_obj, context)

    def execute(self, context: Any) -> dict[str, Any]:
        from retrainer.training import POD_RESULT_PATH, TrainerLaunch, launcher_lease, read_result, record_image_id
        from retrainer_provider.operators import trainer_failed, try_number

        # The pod logs to the server named in the launch (planned from the connection); its credentials come
        # from training.kubernetes.env_from_secret. This task's own registry calls use the connection.
        tracking = MlflowHook(self.mlflow_conn_id).get_tracking()
        launch = TrainerLaunch.from_xcom(self.launch, environ={}).for_try(try_number(context))
        try:
            with launcher_lease(launch, "pod launcher"):
                output = super().execute(context)
        except AirflowException as error:
            oom_killed = self.trainer_ended is not None and self.trainer_ended.reason == "OOMKilled"
            raise trainer_failed(
                self.log, launch, tracking, self._failure(error), retryable=not oom_killed
            ) from None
        result = read_result(output, f"{POD_RESULT_PATH} of the pod")
        if self.trainer_image_id:
            try:
                record_image_id(tracking, result.run_id, self.trainer_image_id)
            except Exception as error:  # the model is trained; only its provenance is less precise
                self.log.warning("could not record the image digest %s: %s", self.trainer_image_id, error)
        return result.to_json()

    def cleanup(self, pod: k8s.V1Pod, remote_pod: k8s.V1Pod, *args: Any, **kwargs: Any) -> None:
        """Note how the trainer container ended, and its last lines if it failed, before the pod is handled."""
        from retrainer.training import TAIL_LINES

        status = _container_status(remote_pod, self.base_container_name)
        self.trainer_image_id = (status.image_id or "") if status else ""
        self.trainer_ended = status.state.terminated if status and status.state else None
        if self.trainer_ended is not None and self.trainer_ended.exit_code:
            try:
                logs = self.pod_manager.read_pod_logs(
                    pod, self.base_container_name, tail_lines=TAIL_LINES, follow=False
                )
                self.trainer_tail = list(logs)
            except Exception as error:  # the exit code matters more than the lines
                self.log.warning("could not read the trainer's last log lines: %s", error)
        super().cleanup(pod, remote_pod, *args, **kwargs)

    def _failure(self, error: AirflowException) -> str:
        """Why the trainer pod failed: exit code and out of memory when the container ran, else the pod's error."""
        from retrainer.training import failure_message

        ended = self.trainer_ended
        if ended is None or not ended.exit_code:
            return f"the trainer pod failed; no model was registered (its log lines are above): {error}"
        return failure_message(
            ended.exit_code,
            self.trainer_tail,
            where=f"pod {self.image}",
            oom_killed=ended.reason == "OOMKilled",
            memory=self.training.memory,
        )


def _container_status(remote_pod: k8s.V1Pod | None, container: str) -> k8s.V1ContainerStatus | None:
    """The status of ``container`` in the pod (its state, and the image digest the kubelet pulled)."""
    statuses = (remote_pod.status.container_statuses if remote_pod and remote_pod.status else None) or []
    return next((s for s in statuses if s.name == container), None)


def _resources(training: TrainingConfig) -> k8s.V1ResourceRequirements:
    """Requests equal to limits (the Guaranteed QoS class: a trainer is not evicted for a neighbour)."""
    limits = {"cpu": f"{int(training.cpus * 1000)}m", "memory": f"{training.memory_bytes // 1024**2}Mi"}
    requests = dict(limits)
    if training.device == "cuda":
        limits["nvidia.com/gpu"] = "1"
    return k8s.V1ResourceRequirements(limits=limits, requests=requests)
