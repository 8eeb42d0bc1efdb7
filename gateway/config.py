"""Gateway settings: environment variables with the GATEWAY_ prefix."""

from __future__ import annotations

import functools
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PLACEHOLDER_FEEDBACK_SECRET = "change-me"
# A model name longer than this cannot be one the gateway serves; capping it keeps error
# messages (and gRPC's metadata, which echoes them) small.
MAX_MODEL_NAME_LENGTH = 64
MAX_LABEL_LENGTH = 64


class Settings(BaseSettings):
    """Everything the gateway reads from its environment."""

    # hide_input_in_errors: a settings error must never print the values it was given,
    # which include the API keys, the feedback secret and the Redis URL's password.
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", extra="ignore", hide_input_in_errors=True
    )

    # 0.0.0.0 so a container is reachable; the local stack and tests set 127.0.0.1.
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    env: Literal["development", "production"] = "development"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Upstream (TF Serving or the embedded server), gRPC.
    serving_target: str = "localhost:8500"
    request_timeout_seconds: float = Field(
        5.0, gt=0, description="deadline of a predict request: preprocessing plus Predict"
    )
    status_timeout_seconds: float = Field(2.0, gt=0, description="deadline of status calls")
    max_grpc_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    retry_after_seconds: int = Field(1, ge=0, description="Retry-After sent with a 503")

    # Limits on what clients send.
    max_body_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    max_batch_size: int = Field(64, ge=1)
    # A digit needs a few thousand pixels; 4 MP still takes a phone photo scaled for the
    # web, and bounds what one decode costs (16 MB as RGBA).
    max_image_pixels: int = Field(4_000_000, ge=784, description="decompression-bomb guard")
    decode_workers: int = Field(2, ge=1, description="images decoded at once (threads)")
    decode_queue: int = Field(16, ge=0, description="images that may wait for a worker")

    # Connections. uvicorn has no read timeout: gateway/server.py adds the header timeout
    # and the connection cap, the middleware the body timeout.
    max_connections: int = Field(64, ge=1, description="open connections; more get a 503")
    header_timeout_seconds: float = Field(10.0, gt=0)
    body_timeout_seconds: float = Field(30.0, gt=0)
    keep_alive_timeout_seconds: float = Field(5.0, gt=0)

    # Models and routing.
    default_model: str = Field("mnist", min_length=1, max_length=MAX_MODEL_NAME_LENGTH)
    signature_name: str = "serving_default"
    # Un-pinned traffic goes to default_label (empty: the server's latest version), and
    # canary_percent of it to canary_label. With a canary share and no default label, the
    # rest goes to "stable": "latest" would usually be the canary itself.
    default_label: str = ""
    canary_percent: float = Field(0.0, ge=0.0, le=100.0)
    canary_label: str = "canary"
    stable_label: str = "stable"
    # The models the gateway serves (and GET /v1/models lists; TF Serving has no "list
    # models" call): GATEWAY_MODELS, else the default model. Others are a 404.
    models: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Feedback: prediction ids are scored once, within feedback_max_age of their issue.
    feedback_secret: SecretStr = SecretStr(PLACEHOLDER_FEEDBACK_SECRET)
    feedback_max_age: timedelta = Field(timedelta(days=7), gt=timedelta(0))
    # "redis": the shared record in GATEWAY_REDIS_URL. "local": an in-process record per
    # replica. "auto": Redis when a URL is set; otherwise local in development, and a
    # refusal to start in production.
    feedback_dedup: Literal["auto", "redis", "local"] = "auto"
    feedback_local_max_ids: int = Field(100_000, ge=1)
    redis_url: SecretStr | None = None
    redis_timeout_seconds: float = Field(0.5, gt=0)

    # Prediction log (gateway/prediction_log.py): NDJSON files per replica under log_dir,
    # written by a background thread. The whole input is kept for a sampled share of
    # predictions, and for every prediction that gets a label.
    log_enabled: bool = True
    log_dir: Path = Path("prediction_log")
    log_sample: float = Field(1.0, ge=0.0, le=1.0, description="share of inputs logged")
    log_max_bytes: int = Field(1024**3, ge=1024 * 1024, description="all files in log_dir")
    log_max_age: timedelta = Field(timedelta(days=30), ge=timedelta(hours=2))
    log_file_max_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="one file")
    log_queue_size: int = Field(10_000, ge=1, description="records waiting for the writer")
    # Where inputs wait for their label (about 1 KB per prediction for feedback_max_age):
    # GATEWAY_REDIS_URL unless set, so a Redis of its own can hold them and its evictions
    # never touch the scored ids.
    log_redis_url: SecretStr | None = None
    # Names this replica's files; empty: <host name>-<process id> (the pod name in k8s).
    log_replica: str = Field("", pattern=r"^[A-Za-z0-9_.-]{0,64}$")

    # Drift (gateway/drift.py): live input and output statistics binned by the reference
    # statistics each version carries in its `reference_stats` signature.
    drift_enabled: bool = True
    drift_signature_name: str = "reference_stats"

    # Shadow traffic (gateway/shadow.py): after answering, shadow_percent of predictions go
    # again to the version labelled shadow_label; the client never waits for it.
    shadow_label: str = Field("", max_length=MAX_LABEL_LENGTH)
    shadow_percent: float = Field(0.0, ge=0.0, le=100.0)
    shadow_timeout_seconds: float = Field(1.0, gt=0)
    shadow_max_concurrency: int = Field(8, ge=1, description="shadow calls in flight")

    # Rollout records (gateway/rollout_record.py, docs/ROLLOUT.md): with GATEWAY_REDIS_URL,
    # the rollout controller's record of each model, `rollout:{model}`, is read every
    # rollout_refresh_seconds and overrides the canary and shadow settings above for that
    # model. Off: the environment settings alone route (an operator's manual override).
    rollout_enabled: bool = True
    # The contract promises a change reaches every replica within 2 s: refresh plus a read.
    rollout_refresh_seconds: float = Field(1.0, gt=0, le=60)

    # Security.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # /metrics: public on the API port by default; with keys it requires one of them, with
    # a port it moves to its own listener (for a NetworkPolicy to fence).
    metrics_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    metrics_port: int | None = Field(None, ge=1, le=65535)
    # /docs and /openapi.json: on in development, off in production unless enabled.
    docs_enabled: bool | None = None

    # Where GET /v1/models/{model}/accuracy reads the online-accuracy recording rule (the
    # web page's status strip); unset: the route says so. Asked with status_timeout_seconds.
    prometheus_url: str | None = Field(None, pattern=r"^https?://[^\s]+$")

    @field_validator("api_keys", "metrics_api_keys", "models", mode="before")
    @classmethod
    def split_comma_separated(cls, value: object) -> object:
        """Accept a comma-separated string, so `GATEWAY_API_KEYS=a,b` works."""
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("feedback_max_age", "log_max_age", mode="before")
    @classmethod
    def read_seconds(cls, value: object) -> object:
        """GATEWAY_FEEDBACK_MAX_AGE, GATEWAY_LOG_MAX_AGE in seconds (604800), or ISO 8601
        (P7D)."""
        if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
            return float(value)
        return value

    @field_validator("prometheus_url", mode="before")
    @classmethod
    def empty_is_unset(cls, value: object) -> object:
        """GATEWAY_PROMETHEUS_URL= (empty) means no Prometheus, as unset does."""
        return None if value == "" else value

    @field_validator("models")
    @classmethod
    def cap_model_names(cls, value: list[str]) -> list[str]:
        """Model names are path segments; each one is capped like a request's."""
        for name in value:
            if len(name) > MAX_MODEL_NAME_LENGTH:
                raise ValueError(f"model names are at most {MAX_MODEL_NAME_LENGTH} characters")
        return value

    @property
    def effective_default_label(self) -> str:
        """The label un-pinned, non-canary traffic is sent to ("" = latest)."""
        if self.default_label or self.canary_percent == 0:
            return self.default_label
        return self.stable_label

    @property
    def model_names(self) -> list[str]:
        """The models the gateway serves: GATEWAY_MODELS, else the default model."""
        return self.models or [self.default_model]

    @property
    def version_labels(self) -> set[str]:
        """The version labels the gateway routes to by itself (metrics keep only these)."""
        labels = {self.canary_label, self.stable_label, self.default_label, self.shadow_label}
        return {label for label in labels if label}

    @property
    def shadow_on(self) -> bool:
        """Whether shadow traffic is sent."""
        return bool(self.shadow_label) and self.shadow_percent > 0

    @property
    def rollout_on(self) -> bool:
        """Whether the rollout records are read (and may override routing and shadow)."""
        return self.rollout_enabled and self.redis_url is not None

    @property
    def feedback_store_kind(self) -> Literal["redis", "local"]:
        """Where scored prediction ids are recorded."""
        if self.feedback_dedup == "local" or self.redis_url is None:
            return "local"
        return "redis"

    @property
    def docs_on(self) -> bool:
        """Whether /docs and /openapi.json are served."""
        return self.env == "development" if self.docs_enabled is None else self.docs_enabled

    @model_validator(mode="after")
    def refuse_insecure_defaults(self) -> Settings:
        """Production must not sign prediction ids with a secret everybody knows, nor count
        feedback per replica without saying so."""
        secret = self.feedback_secret.get_secret_value()
        if self.env == "production" and (secret == PLACEHOLDER_FEEDBACK_SECRET or len(secret) < 16):
            raise ValueError(
                "GATEWAY_FEEDBACK_SECRET must be set to a random value of at least 16 "
                "characters when GATEWAY_ENV=production"
            )
        if self.feedback_dedup == "redis" and self.redis_url is None:
            raise ValueError("GATEWAY_FEEDBACK_DEDUP=redis needs GATEWAY_REDIS_URL")
        if self.env == "production" and self.feedback_dedup == "auto" and self.redis_url is None:
            raise ValueError(
                "GATEWAY_REDIS_URL is not set: in production feedback deduplication must be "
                "shared by every replica. Set GATEWAY_REDIS_URL, or GATEWAY_FEEDBACK_DEDUP=local "
                "to accept that each replica deduplicates on its own"
            )
        if self.metrics_port is not None and self.metrics_api_keys:
            raise ValueError(
                "set GATEWAY_METRICS_PORT (a listener to fence by network) or "
                "GATEWAY_METRICS_API_KEYS (a key on the API port), not both"
            )
        if self.metrics_port == self.port:
            raise ValueError("GATEWAY_METRICS_PORT must differ from GATEWAY_PORT")
        return self


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
