"""Pydantic schemas of every request and response (they are also the OpenAPI docs)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag


class B64Instance(BaseModel):
    """An image file (PNG, JPEG, WebP, BMP, GIF), base64-encoded."""

    model_config = ConfigDict(extra="forbid")

    b64: str = Field(
        description="base64 of the image file's bytes",
        json_schema_extra={"contentEncoding": "base64"},
    )


def pixel_array_schemas(maximum: int) -> list[dict[str, Any]]:
    """JSON Schemas of the two array forms of an instance, with values in [0, maximum].

    Arrays are checked by numpy, not pydantic (784 numbers per instance, on the hot path);
    gateway/inputs.py enforces exactly these shapes and bounds (JSON booleans are not
    numbers there either).
    """
    number = {"type": "number", "minimum": 0, "maximum": maximum}
    row = {"type": "array", "items": number, "minItems": 28, "maxItems": 28}
    return [
        {"title": "28x28 pixels", "type": "array", "items": row, "minItems": 28, "maxItems": 28},
        {"title": "784 pixels", "type": "array", "items": number, "minItems": 784, "maxItems": 784},
    ]


def _instances_field(max_batch: int, maximum: int) -> Any:
    # B64Instance inlined: pydantic resolves no $ref of its own inside json_schema_extra.
    items = {"anyOf": [*pixel_array_schemas(maximum), B64Instance.model_json_schema()]}
    return Field(
        min_length=1,
        max_length=max_batch,
        description=f"1 to {max_batch} instances: 28x28 arrays, flat lists of 784 numbers, "
        f"or {{'b64': ...}} images; numbers in [0, {maximum}]",
        json_schema_extra={"items": items},
    )


def _value_range_tag(body: Any) -> str | None:
    """Which variant a body is, by its value_range ("0-1" when absent)."""
    value = body.get("value_range", "0-1") if isinstance(body, dict) else None
    return value if isinstance(value, str) else None


def predict_request_type(max_batch: int) -> Any:
    """The predict body's type: one variant per value_range, each bounding its numbers.

    Built per app, since the batch limit is a setting. It validates the envelope (the
    instance count, value_range); the same type renders the OpenAPI schema.
    """

    class PredictRequestUnitRange(BaseModel):
        """Pixel values in [0, 1] (value_range "0-1", the default)."""

        instances: list[Any] = _instances_field(max_batch, 1)
        value_range: Literal["0-1"] = Field("0-1", description="the range of array values")

    class PredictRequestByteRange(BaseModel):
        """Pixel values in [0, 255] (value_range "0-255")."""

        instances: list[Any] = _instances_field(max_batch, 255)
        value_range: Literal["0-255"] = Field(description="the range of array values")

    return Annotated[
        Annotated[PredictRequestUnitRange, Tag("0-1")]
        | Annotated[PredictRequestByteRange, Tag("0-255")],
        Discriminator(_value_range_tag),
    ]


class Prediction(BaseModel):
    """The model's answer for one instance."""

    model_config = ConfigDict(populate_by_name=True)

    predicted_class: int = Field(alias="class", ge=0, le=9)
    confidence: float = Field(description="probability of the predicted class")
    probabilities: list[float] = Field(min_length=10, max_length=10)
    prediction_id: str = Field(description="signed id to send back with POST /v1/feedback")
    input: list[list[float]] | None = Field(
        None,
        description="with ?return_input=true: the 28x28 image the model saw, after "
        "preprocessing, values in [0, 1] (light digit on black) rounded to 4 decimals",
    )


class PredictResponse(BaseModel):
    """Predictions for every instance, in order, and the version that made them."""

    model: str
    version: int
    request_id: str
    predictions: list[Prediction]


class FeedbackItem(BaseModel):
    """The true label of a prediction the gateway made."""

    # strict: a label is an integer 0-9, never true or "7".
    model_config = ConfigDict(strict=True, extra="forbid")

    prediction_id: str = Field(
        min_length=1,
        max_length=512,
        description="the prediction_id of a predict response, unchanged",
    )
    label: int = Field(ge=0, le=9, description="the digit the image really shows")


class FeedbackResult(BaseModel):
    """What became of one feedback item: scored (correct|incorrect), or a duplicate."""

    prediction_id: str
    outcome: Literal["correct", "incorrect", "duplicate"] = Field(
        description="duplicate: the id was scored before, and this item was not counted"
    )


class FeedbackResponse(BaseModel):
    """How many items were scored (accepted) and how many were duplicates, per item."""

    accepted: int = Field(description="items scored now")
    duplicates: int = Field(0, description="items whose id was scored before; not counted")
    results: list[FeedbackResult]


class TensorSpecPublic(BaseModel):
    """A signature's input or output; shape -1 is any size, null an unknown rank."""

    dtype: str
    shape: list[int] | None


class SignaturePublic(BaseModel):
    """One serving signature, from GetModelMetadata."""

    method_name: str
    inputs: dict[str, TensorSpecPublic]
    outputs: dict[str, TensorSpecPublic]


class ModelVersionPublic(BaseModel):
    """One version's state, from GetModelStatus."""

    version: int
    state: str = Field(description="UNKNOWN, START, LOADING, AVAILABLE, UNLOADING or END")
    error_code: int = 0
    error_message: str = ""


class ModelPublic(BaseModel):
    """A model: its versions and the serving signatures of its latest available version."""

    name: str
    versions: list[ModelVersionPublic]
    signature_version: int | None = None
    signatures: dict[str, SignaturePublic] = {}
    labels: dict[str, int] = Field(
        {},
        description="the version labels the gateway routes to (canary, stable, "
        "GATEWAY_DEFAULT_LABEL) and the version each names; labels the model server does "
        "not know are left out",
    )


class ModelsPublic(BaseModel):
    """The models the gateway serves."""

    models: list[ModelPublic]


class VersionAccuracyPublic(BaseModel):
    """One version's online accuracy over the rule's window."""

    version: int
    accuracy: float | None = Field(
        ge=0, le=1, description="share of feedback that was correct; null with no feedback"
    )
    feedback_per_second: float = Field(ge=0, description="feedback items scored per second")


class AccuracyPublic(BaseModel):
    """Online accuracy per version, from Prometheus' recording rule, or why there is none."""

    model: str
    status: Literal["ok", "not_configured", "unreachable", "error"] = Field(
        description="ok: read from Prometheus; not_configured: no GATEWAY_PROMETHEUS_URL; "
        "unreachable: Prometheus does not answer; error: it answered something unusable"
    )
    message: str = Field(description="why there are no figures, in words; empty when there are")
    window_seconds: int = Field(description="the window the rule's rates cover")
    versions: list[VersionAccuracyPublic]


class HealthResponse(BaseModel):
    """Liveness."""

    status: Literal["ok"]


class ReadyResponse(BaseModel):
    """Readiness: the model server answers and the default model has an AVAILABLE version.

    The feedback store does not decide readiness (predictions work without it); its state
    is reported in `feedback_dedup` and `warnings`.
    """

    ready: bool
    model: str
    available_versions: list[int] = []
    reason: str = ""
    feedback_dedup: Literal["redis", "local"] = Field(
        description="where scored prediction ids are recorded: shared (redis) or this replica"
    )
    warnings: list[str] = []


class ErrorDetail(BaseModel):
    """What went wrong and what to do about it."""

    code: str
    message: str


class ErrorResponse(BaseModel):
    """The one error shape."""

    error: ErrorDetail
