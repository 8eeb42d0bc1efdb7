"""Controller settings: environment variables with the ROLLOUT_ prefix."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
# The recording rules the controller's queries are built from: the repository's own
# monitoring/rules locally, the same files copied beside the package in the image.
DEFAULT_RULES_DIR = PACKAGE_DIR.parent / "monitoring" / "rules"


class Settings(BaseSettings):
    """Everything the controller and its CLI read from the environment."""

    model_config = SettingsConfigDict(
        env_prefix="ROLLOUT_", extra="ignore", hide_input_in_errors=True
    )

    # Evidence and the world it acts on.
    prometheus_url: str = Field("http://127.0.0.1:9090", pattern=r"^https?://[^\s]+$")
    prometheus_timeout_seconds: float = Field(5.0, gt=0)
    rules_dir: Path = DEFAULT_RULES_DIR
    # The model server's gRPC address: version status, and HandleReloadConfigRequest so a
    # config change applies at once (the server's config poll applies it otherwise).
    serving_target: str = "127.0.0.1:8500"
    serving_timeout_seconds: float = Field(10.0, gt=0)
    reload_config: bool = True
    # Where new versions appear (the trainer's exports).
    model_repository: Path = Path("model_repository")
    # MODEL_REPOSITORY/<model> as the model server sees it (base_path in the config):
    # the same directory locally, the volume's mount point in a container.
    serving_base_path: str = ""
    policies_dir: Path = PACKAGE_DIR / "policies"

    # The model config the controller owns.
    config_store: Literal["file", "configmap"] = "file"
    config_path: Path = Path(".run/models.config")
    configmap_name: str = "tf-serving-models"
    configmap_key: str = "models.config"
    # The shipped seed (a kustomize-generated ConfigMap mounted as a file), copied to the
    # owned ConfigMap only when that does not exist yet.
    configmap_seed: Path | None = None
    namespace: str = "default"

    # The rollout record every gateway reads. Unset: shares cannot reach the gateways,
    # so the controller only moves labels and never starts a shadow or canary stage.
    redis_url: SecretStr | None = None
    redis_timeout_seconds: float = Field(2.0, gt=0)
    # How long the gateways may still route by an older record: they refresh every
    # second, so 2 s; the controller waits this plus the request deadline before it takes
    # a label or a version away from a version that traffic was just moved off.
    record_propagation_seconds: float = Field(2.0, ge=0)
    gateway_request_timeout_seconds: float = Field(5.0, ge=0)

    # The control loop.
    interval_seconds: float = Field(5.0, gt=0)
    audit_log: str = ".run/rollout-audit.jsonl"
    metrics_port: int | None = Field(None, ge=1, le=65535)
    metrics_host: str = "0.0.0.0"

    # Leader election (Kubernetes): one controller acts at a time.
    leader_election: bool = False
    lease_name: str = "rollout-controller"
    pod_name: str = ""

    @field_validator("redis_url", mode="before")
    @classmethod
    def empty_is_unset(cls, value: object) -> object:
        """ROLLOUT_REDIS_URL= (empty) means no Redis, as unset does."""
        return None if value == "" else value

    def base_path(self, model: str) -> str:
        """The base_path the model server loads `model` from."""
        if self.serving_base_path:
            return f"{self.serving_base_path.rstrip('/')}/{model}"
        return str((self.model_repository / model).resolve())

    @property
    def quiet_period_seconds(self) -> float:
        """How long traffic may still reach a version after a record stopped sending it."""
        return 2 * self.record_propagation_seconds + self.gateway_request_timeout_seconds


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
