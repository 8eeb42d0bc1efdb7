"""Gateway settings: environment variables with the GATEWAY_ prefix."""

from __future__ import annotations

import functools
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PLACEHOLDER_FEEDBACK_SECRET = "change-me"


class Settings(BaseSettings):
    """Everything the gateway reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    # 0.0.0.0 so a container is reachable; the local stack and tests set 127.0.0.1.
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    env: Literal["development", "production"] = "development"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Upstream (TF Serving or the embedded server), gRPC.
    serving_target: str = "localhost:8500"
    request_timeout_seconds: float = Field(5.0, gt=0, description="deadline of each Predict")
    status_timeout_seconds: float = Field(2.0, gt=0, description="deadline of status calls")
    max_grpc_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    retry_after_seconds: int = Field(1, ge=0, description="Retry-After sent with a 503")

    # Limits on what clients send.
    max_body_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    max_batch_size: int = Field(64, ge=1)
    max_image_pixels: int = Field(20_000_000, ge=784, description="decompression-bomb guard")

    # Models and routing.
    default_model: str = "mnist"
    signature_name: str = "serving_default"
    # Un-pinned traffic goes to default_label (empty: the server's latest version), and
    # canary_percent of it to canary_label. With a canary share and no default label, the
    # rest goes to "stable": "latest" would usually be the canary itself.
    default_label: str = ""
    canary_percent: float = Field(0.0, ge=0.0, le=100.0)
    canary_label: str = "canary"
    stable_label: str = "stable"
    # GET /v1/models lists these (TF Serving has no "list models" call).
    models: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Security.
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    feedback_secret: str = PLACEHOLDER_FEEDBACK_SECRET

    @field_validator("api_keys", "models", mode="before")
    @classmethod
    def split_api_keys(cls, value: object) -> object:
        """Accept a comma-separated string, so `GATEWAY_API_KEYS=a,b` works."""
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @property
    def effective_default_label(self) -> str:
        """The label un-pinned, non-canary traffic is sent to ("" = latest)."""
        if self.default_label or self.canary_percent == 0:
            return self.default_label
        return self.stable_label

    @property
    def model_names(self) -> list[str]:
        """The models GET /v1/models reports: GATEWAY_MODELS, else the default model."""
        return self.models or [self.default_model]

    @model_validator(mode="after")
    def refuse_insecure_defaults(self) -> Settings:
        """Production must not sign prediction ids with a secret everybody knows."""
        if self.env == "production" and (
            self.feedback_secret == PLACEHOLDER_FEEDBACK_SECRET or len(self.feedback_secret) < 16
        ):
            raise ValueError(
                "GATEWAY_FEEDBACK_SECRET must be set to a random value of at least 16 "
                "characters when GATEWAY_ENV=production"
            )
        return self


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
