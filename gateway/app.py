"""The FastAPI app: a thin HTTP adapter over `DataPlane`.

`create_app(settings)` builds everything; nothing happens at import time.
"""

from __future__ import annotations

import asyncio
import hmac
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field
from python_multipart.exceptions import FormParserError
from starlette.datastructures import UploadFile

from gateway.config import Settings, get_settings
from gateway.dataplane import DataPlane
from gateway.errors import (
    ForbiddenError,
    InvalidInputError,
    MalformedRequestError,
    ModelNotFoundError,
    UnauthenticatedError,
    UnsupportedMediaTypeError,
    error_body,
    install_error_handlers,
)
from gateway.inputs import parse_json_body
from gateway.metrics import GatewayMetrics
from gateway.middleware import RequestContextMiddleware
from gateway.schemas import (
    B64Instance,
    ErrorResponse,
    FeedbackItem,
    FeedbackResponse,
    HealthResponse,
    ModelPublic,
    ModelsPublic,
    PredictRequest,
    PredictResponse,
    ReadyResponse,
)
from gateway.tfs_protos import load_messages
from gateway.upstream import ServingClient

IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp", "image/gif")
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "malformed body or prediction id",
        401: "API key missing",
        403: "API key wrong",
        404: "unknown model, version or label",
        413: "body, batch or image too large",
        415: "unsupported media type",
        422: "wrong shape, NaN, out-of-range values, undecodable image, no ink",
        503: "model server unavailable (Retry-After)",
        504: "model server deadline passed",
    }.items()
}

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def get_dataplane(request: Request) -> DataPlane:
    return request.app.state.dataplane


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def require_api_key(
    request: Request, api_key: Annotated[str | None, Depends(api_key_header)]
) -> None:
    """Dependency form of `check_api_key` (it also puts the scheme in the OpenAPI docs)."""
    await check_api_key(request)


async def check_api_key(request: Request) -> None:
    """When GATEWAY_API_KEYS is set, require one of them (X-API-Key, or a Bearer token)."""
    keys = request.app.state.settings.api_keys
    if not keys:
        return
    offered = request.headers.get("x-api-key")
    if not offered:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        offered = token.strip() if scheme.lower() == "bearer" else None
    if not offered:
        raise UnauthenticatedError("an API key is required: send it as X-API-Key")
    # Compare against every key in constant time, so timing reveals nothing.
    matches = [hmac.compare_digest(offered.encode(), key.encode()) for key in keys]
    if not any(matches):
        raise ForbiddenError("the API key is not valid")


def json_response(content: dict[str, Any], status_code: int = 200) -> Response:
    """Serialise once with orjson (the predict path skips response re-validation)."""
    return Response(
        orjson.dumps(content),
        status_code=status_code,
        media_type="application/json",
    )


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)
# The predict routes take only the Request and read their parameters themselves: FastAPI's
# per-request dependency solving cost more than the rest of the route (profiled), and
# these are the routes under load. Their parameters and security are declared for the
# OpenAPI docs by hand (PREDICT_PARAMETERS, openapi_extra).
hot = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)
PREDICT_PARAMETERS = [
    {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}},
    {
        "name": "version",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1},
        "description": "pin a version number",
    },
    {
        "name": "label",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": 64},
        "description": "pin a label: stable|canary",
    },
]
PREDICT_SECURITY = [{"APIKeyHeader": []}]


def read_pins(request: Request) -> tuple[int | None, str | None]:
    """?version=N and ?label=L, validated (422 with what to send instead)."""
    params = request.query_params
    raw_version, label = params.get("version"), params.get("label")
    version = None
    if raw_version is not None:
        if not raw_version.isdigit() or int(raw_version) < 1:
            raise InvalidInputError(
                f"?version= must be a positive integer such as 3, not {raw_version!r}"
            )
        version = int(raw_version)
    if label is not None and not 1 <= len(label) <= 64:
        raise InvalidInputError("?label= must be 1 to 64 characters, e.g. ?label=canary")
    return version, label


@hot.post(
    "/models/{model}/predict",
    response_model=PredictResponse,
    summary="Predict digits from 28x28 arrays or base64 images",
    openapi_extra={
        "parameters": PREDICT_PARAMETERS,
        "security": PREDICT_SECURITY,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
            },
        },
    },
)
async def predict(request: Request) -> Response:
    """Body `{"instances": [...], "value_range": "0-1"|"0-255"}` (see PredictRequest)."""
    await check_api_key(request)
    version, label = read_pins(request)
    model = request.path_params["model"]
    dataplane: DataPlane = request.app.state.dataplane
    if media_type(request) not in ("application/json", ""):
        raise UnsupportedMediaTypeError(
            f"send the instances as application/json, not {media_type(request)}; "
            "upload image files to /predict/image"
        )
    payload = parse_json_body(await request.body())
    result = await dataplane.predict_instances(model, payload, version, label)
    result["request_id"] = request.state.request_id
    return json_response(result)


IMAGE_SCHEMA = {"type": "string", "format": "binary"}


async def read_multipart_file(request: Request, max_part_bytes: int) -> bytes:
    """The bytes of the multipart field `file`; a body that is not valid multipart is a 400."""
    try:
        async with request.form(max_files=1, max_fields=8, max_part_size=max_part_bytes) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidInputError('the multipart body needs a "file" field with the image')
            return await upload.read()
    except FormParserError as error:
        # Starlette turns only its own MultiPartException into a 400; python-multipart's
        # parse errors (bad boundary, bad header bytes) would otherwise escape as a 500.
        raise MalformedRequestError(
            f"the multipart body cannot be parsed ({error}): send multipart/form-data with a "
            'boundary and a "file" field'
        ) from None


@hot.post(
    "/models/{model}/predict/image",
    response_model=PredictResponse,
    summary="Predict the digit in one image file (photo, scan, canvas PNG)",
    openapi_extra={
        "parameters": PREDICT_PARAMETERS,
        "security": PREDICT_SECURITY,
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": IMAGE_SCHEMA},
                        "required": ["file"],
                    }
                },
                **{image_type: {"schema": IMAGE_SCHEMA} for image_type in IMAGE_TYPES},
            },
        },
    },
)
async def predict_image(request: Request) -> Response:
    """A multipart field `file`, or a raw image/png|jpeg|webp|bmp|gif body."""
    await check_api_key(request)
    version, label = read_pins(request)
    model = request.path_params["model"]
    dataplane: DataPlane = request.app.state.dataplane
    settings: Settings = request.app.state.settings
    kind = media_type(request)
    if kind == "multipart/form-data":
        data = await read_multipart_file(request, settings.max_body_bytes)
    elif kind in IMAGE_TYPES:
        data = await request.body()
    else:
        raise UnsupportedMediaTypeError(
            f"unsupported media type {kind or '(none)'}: send multipart/form-data with a "
            f"'file' field, or a raw body of type {', '.join(IMAGE_TYPES)}"
        )
    result = await dataplane.predict_image(model, data, version, label)
    result["request_id"] = request.state.request_id
    return json_response(result)


@v1.post("/feedback", response_model=FeedbackResponse, summary="Report the true label")
async def feedback(
    body: Annotated[
        FeedbackItem | Annotated[list[FeedbackItem], Field(min_length=1, max_length=1000)],
        Body(),
    ],
    dataplane: DataPlaneDep,
) -> FeedbackResponse:
    """Score predictions against true labels; a forged or malformed id is a 400."""
    items = body if isinstance(body, list) else [body]
    results = dataplane.score_feedback([(item.prediction_id, item.label) for item in items])
    return FeedbackResponse.model_validate({"accepted": len(results), "results": results})


@v1.get("/models", response_model=ModelsPublic, summary="Every model, its versions and states")
async def list_models(dataplane: DataPlaneDep, settings: SettingsDep) -> ModelsPublic:
    """GetModelStatus and GetModelMetadata for each model in GATEWAY_MODELS."""

    async def describe(name: str) -> dict[str, Any]:
        try:
            return await dataplane.describe_model(name)
        except ModelNotFoundError:
            return {"name": name, "versions": []}

    described = await asyncio.gather(*(describe(name) for name in settings.model_names))
    return ModelsPublic.model_validate({"models": described})


@v1.get("/models/{model}", response_model=ModelPublic, summary="One model's versions")
async def get_model(model: str, dataplane: DataPlaneDep) -> ModelPublic:
    """Versions and states (GetModelStatus) and serving signatures (GetModelMetadata)."""
    return ModelPublic.model_validate(await dataplane.describe_model(model))


ops = APIRouter()


@ops.get("/healthz", response_model=HealthResponse, summary="Liveness")
async def healthz() -> dict[str, str]:
    """Answers while the process is alive; checks nothing upstream on purpose."""
    return {"status": "ok"}


@ops.get(
    "/readyz",
    response_model=ReadyResponse,
    responses={503: {"model": ErrorResponse, "description": "not ready"}},
    summary="Readiness",
)
async def readyz(dataplane: DataPlaneDep, settings: SettingsDep) -> Response:
    """Ready when the model server answers and the default model has an AVAILABLE version."""
    state = await dataplane.readiness()
    if state["ready"]:
        return json_response(state)
    body = error_body("not_ready", state["reason"])
    response = json_response(body, status_code=503)
    response.headers["Retry-After"] = str(settings.retry_after_seconds)
    return response


@ops.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus exposition of the gateway's metrics."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _openapi_with_request_schemas(app: FastAPI):
    """OpenAPI plus the schemas of bodies the routes parse themselves (for speed)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (PredictRequest, B64Instance):
            definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(definition.pop("$defs", {}))
            components[model.__name__] = definition
        app.openapi_schema = schema
        return schema

    return openapi


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the gateway app; the gRPC channel opens when the app starts."""
    settings = settings or get_settings()
    metrics = GatewayMetrics()
    client = ServingClient(settings, load_messages(), metrics)
    dataplane = DataPlane(settings, client, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await client.start()
        try:
            yield
        finally:
            await client.close()

    app = FastAPI(
        title="MNIST gateway",
        version="1.0.0",
        description="Preprocesses digits (arrays, photos, scans, canvas PNGs) and asks "
        "TF Serving over gRPC. Errors: {'error': {'code', 'message'}}.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.dataplane = dataplane
    app.include_router(hot)
    app.include_router(v1)
    app.include_router(ops)
    install_error_handlers(app)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        routes=app.router.routes,
    )
    app.openapi = _openapi_with_request_schemas(app)
    return app
