"""The FastAPI app: a thin HTTP adapter over `DataPlane`.

`create_app(settings, upstream=..., feedback_store=...)` builds everything; nothing
happens at import time. Tests pass a fake upstream to run the routes in-process.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field, TypeAdapter
from python_multipart.exceptions import FormParserError
from starlette.datastructures import UploadFile

from gateway.accuracy import OnlineAccuracy
from gateway.config import MAX_LABEL_LENGTH, Settings, get_settings
from gateway.dataplane import DataPlane
from gateway.decode_pool import DecodePool
from gateway.drift import DriftMonitor
from gateway.errors import (
    InvalidInputError,
    MalformedRequestError,
    ModelNotFoundError,
    UnsupportedMediaTypeError,
    error_body,
    install_error_handlers,
)
from gateway.feedback_store import FeedbackStore, create_feedback_store
from gateway.inputs import parse_predict_body
from gateway.metrics import GatewayMetrics, MetricLabels
from gateway.middleware import ApiKeyMiddleware, RequestContextMiddleware
from gateway.prediction_log import PredictionLog, create_prediction_log
from gateway.prediction_memory import PredictionMemory, create_prediction_memory
from gateway.rollout_record import RolloutRecordReader, create_rollout_reader
from gateway.schemas import (
    AccuracyPublic,
    ErrorResponse,
    FeedbackItem,
    FeedbackResponse,
    HealthResponse,
    ModelPublic,
    ModelsPublic,
    PredictResponse,
    ReadyResponse,
    predict_request_type,
)
from gateway.shadow import ShadowRunner
from gateway.tfs_protos import load_messages
from gateway.upstream import ServingClient, Upstream
from gateway.webpage import add_webpage

IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp", "image/gif")
# TF Serving's version numbers are int64.
MAX_VERSION = 2**63 - 1
ERROR_DESCRIPTIONS = {
    400: "malformed body or prediction id",
    401: "API key missing",
    403: "API key wrong",
    404: "model not served here, or no such version or label",
    408: "the body did not arrive in time",
    409: "every prediction id was scored before",
    410: "a prediction id is older than GATEWAY_FEEDBACK_MAX_AGE",
    413: "body, batch or image too large",
    415: "unsupported media type",
    422: "wrong shape, type or range; undecodable image; no ink",
    500: "unexpected error (logged)",
    502: "the model server failed",
    503: "model server, feedback store or decoders unavailable or full (Retry-After)",
    504: "deadline passed",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses in the one error shape."""
    return {
        status: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }


COMMON_ERRORS = (401, 403, 408, 413, 500)
PREDICT_ERRORS = error_responses(*COMMON_ERRORS, 400, 404, 415, 422, 502, 503, 504)


async def get_dataplane(request: Request) -> DataPlane:
    return request.app.state.dataplane


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def json_response(content: dict[str, Any], status_code: int = 200) -> Response:
    """Serialise once with orjson (the predict path skips response re-validation)."""
    return Response(
        orjson.dumps(content),
        status_code=status_code,
        media_type="application/json",
    )


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def read_pins(request: Request) -> tuple[int | None, str | None]:
    """?version=N and ?label=L, validated (422 with what to send instead)."""
    params = request.query_params
    raw_version, label = params.get("version"), params.get("label")
    version = None
    if raw_version is not None:
        # isascii: str.isdigit() also accepts Arabic-Indic and full-width digits.
        if not (raw_version.isascii() and raw_version.isdigit()) or not (
            1 <= int(raw_version) <= MAX_VERSION
        ):
            raise InvalidInputError(
                f"?version= must be an integer from 1 to {MAX_VERSION}, such as 3; "
                f"not {raw_version[:32]!r}"
            )
        version = int(raw_version)
    if label is not None and not 1 <= len(label) <= MAX_LABEL_LENGTH:
        raise InvalidInputError(
            f"?label= must be 1 to {MAX_LABEL_LENGTH} characters, e.g. ?label=canary"
        )
    if version is not None and label is not None:
        raise InvalidInputError("give either ?version= or ?label=, not both")
    return version, label


def read_return_input(request: Request) -> bool:
    """?return_input=true|false (also 1|0); anything else is a 422."""
    raw = request.query_params.get("return_input")
    if raw is None:
        return False
    value = raw.lower()
    if value not in ("true", "false", "1", "0"):
        raise InvalidInputError(f"?return_input= must be true or false, not {raw[:32]!r}")
    return value in ("true", "1")


# The predict routes take only the Request and read their parameters themselves: FastAPI's
# per-request dependency solving cost more than the rest of the route (profiled), and
# these are the routes under load. Their parameters and bodies are declared for the
# OpenAPI document by `predict_openapi`.
hot = APIRouter(prefix="/v1")


def predict_openapi(request_body: dict[str, Any]) -> dict[str, Any]:
    """openapi_extra of a predict route: its pins and its request body."""
    return {
        "parameters": [
            {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}},
            {
                "name": "version",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
                "description": "pin a version number (not with label)",
            },
            {
                "name": "label",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_LABEL_LENGTH},
                "description": "pin a version label such as stable or canary (not with version)",
            },
            {
                "name": "return_input",
                "in": "query",
                "required": False,
                "schema": {"type": "boolean", "default": False},
                "description": "add to each prediction the 28x28 image the model saw",
            },
        ],
        "requestBody": {"required": True, "content": request_body},
    }


IMAGE_SCHEMA = {"type": "string", "format": "binary"}
REQUEST_ID_PARAMETER = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "echoed in the response's X-Request-ID (its first 128 characters); "
    "one is generated when absent",
}


@hot.post(
    "/models/{model}/predict",
    response_model=PredictResponse,
    responses=PREDICT_ERRORS,
    summary="Predict digits from 28x28 arrays or base64 images",
    openapi_extra=predict_openapi(
        {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}}
    ),
)
async def predict(request: Request) -> Response:
    """Body `{"instances": [...], "value_range": "0-1"|"0-255"}` (see PredictRequest)."""
    if media_type(request) not in ("application/json", ""):
        raise UnsupportedMediaTypeError(
            f"send the instances as application/json, not {media_type(request)}; "
            "upload image files to /predict/image"
        )
    version, label = read_pins(request)
    return_input = read_return_input(request)
    state = request.app.state
    payload = parse_predict_body(
        await request.body(), state.predict_envelope, state.settings.max_batch_size
    )
    result = await state.dataplane.predict_instances(
        request.path_params["model"],
        payload,
        version,
        label,
        request.state.request_id,
        return_input,
    )
    result["request_id"] = request.state.request_id
    return json_response(result)


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
    responses=PREDICT_ERRORS,
    summary="Predict the digit in one image file (photo, scan, canvas PNG)",
    openapi_extra=predict_openapi(
        {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": IMAGE_SCHEMA},
                    "required": ["file"],
                }
            },
            **{image_type: {"schema": IMAGE_SCHEMA} for image_type in IMAGE_TYPES},
        }
    ),
)
async def predict_image(request: Request) -> Response:
    """A multipart field `file`, or a raw image/png|jpeg|webp|bmp|gif body."""
    version, label = read_pins(request)
    return_input = read_return_input(request)
    state = request.app.state
    kind = media_type(request)
    if kind == "multipart/form-data":
        data = await read_multipart_file(request, state.settings.max_body_bytes)
    elif kind in IMAGE_TYPES:
        data = await request.body()
    else:
        raise UnsupportedMediaTypeError(
            f"unsupported media type {kind or '(none)'}: send multipart/form-data with a "
            f"'file' field, or a raw body of type {', '.join(IMAGE_TYPES)}"
        )
    result = await state.dataplane.predict_image(
        request.path_params["model"], data, version, label, request.state.request_id, return_input
    )
    result["request_id"] = request.state.request_id
    return json_response(result)


v1 = APIRouter(prefix="/v1")


@v1.post(
    "/feedback",
    response_model=FeedbackResponse,
    responses=error_responses(*COMMON_ERRORS, 400, 409, 410, 422, 503),
    summary="Report the true label of predictions",
)
async def feedback(
    body: Annotated[
        FeedbackItem | Annotated[list[FeedbackItem], Field(min_length=1, max_length=1000)],
        Body(),
    ],
    dataplane: DataPlaneDep,
) -> FeedbackResponse:
    """Score predictions against true labels, each prediction id once.

    A forged or altered id is a 400, an expired one a 410 (the whole request is refused,
    nothing is counted). An id scored before is a 409 on its own; in a list with new ids
    it is reported as `duplicate` and not counted.
    """
    items = body if isinstance(body, list) else [body]
    scored = await dataplane.score_feedback([(item.prediction_id, item.label) for item in items])
    return FeedbackResponse.model_validate(scored)


@v1.get(
    "/models",
    response_model=ModelsPublic,
    responses=error_responses(*COMMON_ERRORS, 502, 503, 504),
    summary="Every model, its versions and states",
)
async def list_models(dataplane: DataPlaneDep, settings: SettingsDep) -> ModelsPublic:
    """GetModelStatus and GetModelMetadata for each model in GATEWAY_MODELS."""

    async def describe(name: str) -> dict[str, Any]:
        try:
            return await dataplane.describe_model(name)
        except ModelNotFoundError:
            return {"name": name, "versions": []}

    described = await asyncio.gather(*(describe(name) for name in settings.model_names))
    return ModelsPublic.model_validate({"models": described})


@v1.get(
    "/models/{model}",
    response_model=ModelPublic,
    responses=error_responses(*COMMON_ERRORS, 404, 502, 503, 504),
    summary="One model's versions",
)
async def get_model(model: str, dataplane: DataPlaneDep) -> ModelPublic:
    """Versions and states (GetModelStatus) and serving signatures (GetModelMetadata)."""
    return ModelPublic.model_validate(await dataplane.describe_model(model))


@v1.get(
    "/models/{model}/accuracy",
    response_model=AccuracyPublic,
    responses=error_responses(*COMMON_ERRORS, 404),
    summary="Online accuracy per version, from Prometheus' recording rule",
)
async def model_accuracy(model: str, request: Request, dataplane: DataPlaneDep) -> AccuracyPublic:
    """The rule `model_version:gateway_online_accuracy:ratio_rate5m` for this model, read
    from GATEWAY_PROMETHEUS_URL (cached 5 s). Without a reachable Prometheus it is still a
    200, whose `status` and `message` say why there are no figures."""
    dataplane.check_model(model)
    return AccuracyPublic.model_validate(await request.app.state.online_accuracy.read(model))


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


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus exposition of the gateway's metrics."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def build_openapi(app: FastAPI, settings: Settings, envelope: Any):
    """The OpenAPI document, completed with what the fast routes validate by hand.

    - PredictRequest: the predict body's type, the very one that validates it;
    - every `model` path parameter: an enum of the models served;
    - every /v1 operation: the API key scheme, when keys are configured;
    - every operation: the optional X-Request-ID header (echoed, at most 128 characters kept).
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {})
        definitions = components.setdefault("schemas", {})
        predict_request = TypeAdapter(envelope).json_schema(
            ref_template="#/components/schemas/{model}"
        )
        definitions.update(predict_request.pop("$defs", {}))
        definitions["PredictRequest"] = predict_request
        if settings.api_keys:
            components["securitySchemes"] = {
                "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            }
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                operation.setdefault("parameters", []).append(REQUEST_ID_PARAMETER)
                for parameter in operation["parameters"]:
                    if parameter["name"] == "model" and parameter["in"] == "path":
                        parameter["schema"] = {"type": "string", "enum": settings.model_names}
                if settings.api_keys and path.startswith("/v1/"):
                    operation["security"] = [{"APIKeyHeader": []}, {"Bearer": []}]
        app.openapi_schema = schema
        return schema

    return openapi


def add_docs(app: FastAPI) -> None:
    """Swagger UI at /docs, its files served from the installed swagger-ui-bundle-v2
    package: the page must not load scripts from a CDN."""
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs/assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    async def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - API docs",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )

    app.add_api_route("/docs", docs, include_in_schema=False)


def start_metrics_listener(settings: Settings, metrics: GatewayMetrics):
    """/metrics on GATEWAY_METRICS_PORT, in a thread of its own (prometheus_client)."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(
        settings.metrics_port, addr=settings.host, registry=metrics.registry
    )
    return server


class Observers:
    """The prediction log, the per-prediction memory, shadow traffic and drift, each on
    when its settings say so (GATEWAY_LOG_ENABLED, GATEWAY_SHADOW_*, GATEWAY_DRIFT_ENABLED).

    Shadow traffic also runs whenever rollout records are read: a record may ask for it.
    """

    def __init__(
        self,
        settings: Settings,
        upstream: Upstream,
        metrics: GatewayMetrics,
        rollout: RolloutRecordReader | None = None,
    ) -> None:
        self.settings, self.upstream, self.metrics = settings, upstream, metrics
        self.rollout = rollout
        self.log: PredictionLog | None = None
        self.memory: PredictionMemory | None = None
        self.shadow: ShadowRunner | None = None
        self.drift: DriftMonitor | None = None

    async def start(self, dataplane: DataPlane) -> None:
        """Build and start the parts (inside the running event loop); attach them."""
        settings, metrics = self.settings, self.metrics
        if settings.log_enabled:
            self.log = create_prediction_log(settings, metrics)
            self.log.start()
        shadow_possible = settings.shadow_on or self.rollout is not None
        if settings.log_enabled or shadow_possible:
            self.memory = create_prediction_memory(settings, metrics)
            await self.memory.start()
        if shadow_possible:
            self.shadow = ShadowRunner(
                self.upstream,
                metrics,
                settings.shadow_label,
                settings.shadow_percent,
                settings.shadow_timeout_seconds,
                settings.shadow_max_concurrency,
                self.memory,
                self.log.submit if self.log is not None else None,
                rollout=self.rollout,
            )
        if settings.drift_enabled:
            self.drift = DriftMonitor(self.upstream, metrics, settings.drift_signature_name)
        dataplane.attach_observers(self.log, self.memory, self.shadow, self.drift)

    async def close(self) -> None:
        """Stop shadow calls and reference fetches, write what is queued, close."""
        for part in (self.shadow, self.drift, self.memory):
            if part is not None:
                await part.close()
        if self.log is not None:
            await asyncio.to_thread(self.log.stop)


def create_app(
    settings: Settings | None = None,
    upstream: Upstream | None = None,
    feedback_store: FeedbackStore | None = None,
) -> FastAPI:
    """Build the gateway app; connections open when the app starts.

    `upstream` (default: a gRPC ServingClient to GATEWAY_SERVING_TARGET) and
    `feedback_store` (default: the one the settings choose) can be given, e.g. fakes.
    """
    settings = settings or get_settings()
    metrics = GatewayMetrics(labels=MetricLabels(settings.model_names, settings.version_labels))
    upstream = upstream or ServingClient(settings, load_messages(), metrics)
    feedback_store = feedback_store or create_feedback_store(settings)
    decode_pool = DecodePool(settings.decode_workers, settings.decode_queue)
    rollout = create_rollout_reader(settings, metrics)
    dataplane = DataPlane(settings, upstream, metrics, feedback_store, decode_pool, rollout=rollout)
    envelope = predict_request_type(settings.max_batch_size)
    observers = Observers(settings, upstream, metrics, rollout)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        metrics_server = None
        if settings.metrics_port is not None:
            metrics_server = start_metrics_listener(settings, metrics)
        await upstream.start()
        if rollout is not None:
            await rollout.start()
        await observers.start(dataplane)
        try:
            yield
        finally:
            if rollout is not None:
                await rollout.close()
            await observers.close()
            await upstream.close()
            await feedback_store.close()
            decode_pool.shutdown()
            if metrics_server is not None:
                metrics_server.shutdown()

    app = FastAPI(
        title="MNIST gateway",
        version="1.0.0",
        description="Preprocesses digits (arrays, photos, scans, canvas PNGs) and asks "
        "TF Serving over gRPC. Errors: {'error': {'code', 'message'}}.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs_on else None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.dataplane = dataplane
    app.state.observers = observers
    app.state.rollout = rollout
    app.state.predict_envelope = TypeAdapter(envelope)
    app.state.online_accuracy = OnlineAccuracy(
        settings.prometheus_url, settings.status_timeout_seconds
    )
    app.include_router(hot)
    app.include_router(v1)
    app.include_router(ops)
    if settings.metrics_port is None:
        app.add_api_route("/metrics", metrics_endpoint, include_in_schema=False)
    if settings.docs_on:
        add_docs(app)
    add_webpage(app, settings)
    install_error_handlers(app, settings.retry_after_seconds)
    app.add_middleware(
        ApiKeyMiddleware,
        api_keys=[key.get_secret_value() for key in settings.api_keys],
        metrics_keys=[key.get_secret_value() for key in settings.metrics_api_keys],
    )
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_seconds=settings.body_timeout_seconds,
        routes=app.router.routes,
    )
    app.openapi = build_openapi(app, settings, envelope)
    return app
