"""Pydantic schemas of every request and response (they are also the OpenAPI docs)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class B64Instance(BaseModel):
    """An image file (PNG, JPEG, WebP, BMP, GIF), base64-encoded."""

    b64: str = Field(description="base64 of the image file's bytes")


class PredictRequest(BaseModel):
    """Up to GATEWAY_MAX_BATCH_SIZE instances: 28x28 arrays, flat 784 arrays or images."""

    instances: list[list[list[float]] | list[float] | B64Instance] = Field(
        min_length=1,
        description="each a 28x28 array, a flat list of 784 numbers, or {'b64': ...}",
    )
    value_range: Literal["0-1", "0-255"] = Field(
        "0-1", description="the range of array values; never guessed"
    )


class Prediction(BaseModel):
    """The model's answer for one instance."""

    model_config = ConfigDict(populate_by_name=True)

    predicted_class: int = Field(alias="class", ge=0, le=9)
    confidence: float = Field(description="probability of the predicted class")
    probabilities: list[float] = Field(min_length=10, max_length=10)
    prediction_id: str = Field(description="signed id to send back with POST /v1/feedback")


class PredictResponse(BaseModel):
    """Predictions for every instance, in order, and the version that made them."""

    model: str
    version: int
    request_id: str
    predictions: list[Prediction]


class FeedbackItem(BaseModel):
    """The true label of a prediction the gateway made."""

    prediction_id: str = Field(min_length=1, max_length=512)
    label: int = Field(ge=0, le=9, description="the digit the image really shows")


class FeedbackResult(BaseModel):
    """Whether the prediction was right."""

    prediction_id: str
    outcome: Literal["correct", "incorrect"]


class FeedbackResponse(BaseModel):
    """How many feedback items were scored, and each outcome."""

    accepted: int
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


class ModelsPublic(BaseModel):
    """The models the gateway serves."""

    models: list[ModelPublic]


class HealthResponse(BaseModel):
    """Liveness."""

    status: Literal["ok"]


class ReadyResponse(BaseModel):
    """Readiness: the model server answers and the default model has an AVAILABLE version."""

    ready: bool
    model: str
    available_versions: list[int] = []
    reason: str = ""


class ErrorDetail(BaseModel):
    """What went wrong and what to do about it."""

    code: str
    message: str


class ErrorResponse(BaseModel):
    """The one error shape."""

    error: ErrorDetail
