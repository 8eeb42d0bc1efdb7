"""Locust scenarios for the MNIST stack: real digits through the gateway, and gRPC direct.

Run it with `make load` (headless, bounded, report in `reports/<run>/`), with
`make load-distributed WORKERS=N` (one master and N workers, Locust's own engine), or
`locust -f loadtests/locustfile.py --host http://127.0.0.1:8080` for the web UI. In
Kubernetes, k8s/components/loadtest runs it as a master and worker Deployments.

Users (weights via `LOAD_WEIGHT_*` or `--weight-*`; 0 leaves a user type out):
- `JsonPredictUser`: `POST /v1/models/{model}/predict` with 28x28 pixel arrays.
- `ImageUploadUser`: `POST /v1/models/{model}/predict/image`, PNG as a multipart upload and
  JPEG as a raw `image/jpeg` body.
- `Base64PredictUser`: `POST /v1/models/{model}/predict` with `{"b64": <PNG>}` instances.
- `ModelStatusUser`: `GET /v1/models/{model}` and `GET /v1/models`.
- `GrpcPredictUser`: PredictionService.Predict on the model server, bypassing the gateway,
  so the report shows the gateway's overhead next to the model server's own latency.

The predicting users send the true label to `POST /v1/feedback` for a share of predictions
(`LOAD_FEEDBACK_SHARE`). The load shape is `LOAD_SHAPE` (steady, step, spike) and the SLO gate
(`SLO_P95_MS`, `SLO_P99_MS`, `SLO_MAX_FAILURE_RATIO`) sets the exit code when the run ends.
"""

from __future__ import annotations

import logging
import random
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Locust imports this file by path rather than as part of the `loadtests` package; putting
# the repository root on sys.path lets it import its sibling modules from any directory.
# absolute(), not resolve(): in Kubernetes these files are a ConfigMap volume's symlinks,
# which resolve into a hidden timestamped directory rather than the package's parent.
_REPO_ROOT = str(Path(__file__).absolute().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import gevent  # noqa: E402
from locust import FastHttpUser, LoadTestShape, User, events, task  # noqa: E402
from locust.runners import MasterRunner, WorkerRunner  # noqa: E402

from loadtests import grpc_client, mnist_samples, shapes, slo  # noqa: E402
from loadtests.responses import (  # noqa: E402
    check_feedback_body,
    check_model_list_body,
    check_model_status_body,
    check_predict_body,
    describe_http_error,
)

logger = logging.getLogger("loadtests")


# --------------------------------------------------------------------------- options


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    """Register the scenario's options; each also reads the environment variable it names."""
    add = parser.add_argument
    add("--model-name", env_var="LOAD_MODEL_NAME", default="mnist", help="Model to load")
    add(
        "--grpc-target",
        env_var="LOAD_GRPC_TARGET",
        default="127.0.0.1:8500",
        help="Model server gRPC address for GrpcPredictUser",
    )
    for kind, default in WEIGHT_DEFAULTS.items():
        add(
            f"--weight-{kind}",
            env_var=f"LOAD_WEIGHT_{kind.upper()}",
            type=int,
            default=default,
            help=f"Relative share of {WEIGHT_USERS[kind]} (0 leaves it out)",
        )
    add(
        "--feedback-share",
        env_var="LOAD_FEEDBACK_SHARE",
        type=float,
        default=0.2,
        help="Share of predictions followed by feedback with the true label (0-1)",
    )
    add(
        "--batch-size",
        env_var="LOAD_BATCH_SIZE",
        type=int,
        default=1,
        help="Images per JSON/base64/gRPC predict request",
    )
    add(
        "--sample-size",
        env_var="LOAD_SAMPLE_SIZE",
        type=int,
        default=500,
        help="Real MNIST images drawn (seeded) from the offline set and encoded once",
    )
    add(
        "--split-seed",
        env_var="LOAD_SPLIT_SEED",
        type=int,
        default=mnist_samples.DEFAULT_SPLIT_SEED,
        help="Send the test split the trainer holds out with this --seed (-1: whole sample)",
    )
    add(
        "--wait-min",
        env_var="LOAD_WAIT_MIN_SECONDS",
        type=float,
        default=0.1,
        help="Least think time between a user's requests, seconds",
    )
    add(
        "--wait-max",
        env_var="LOAD_WAIT_MAX_SECONDS",
        type=float,
        default=0.5,
        help="Most think time between a user's requests, seconds",
    )
    add(
        "--api-key",
        env_var="LOAD_API_KEY",
        default="",
        is_secret=True,
        help="Sent as X-API-Key when the gateway requires a key",
    )
    add(
        "--shape",
        env_var="LOAD_SHAPE",
        default="steady",
        choices=shapes.SHAPE_KINDS,
        help="Load shape; -u is the peak users, -r the spawn rate, -t bounds the run",
    )
    add("--step-users", env_var="LOAD_STEP_USERS", type=int, default=2, help="Users per step")
    add(
        "--step-seconds",
        env_var="LOAD_STEP_SECONDS",
        type=float,
        default=10.0,
        help="Seconds per step",
    )
    add(
        "--spike-base-users",
        env_var="LOAD_SPIKE_BASE_USERS",
        type=int,
        default=0,
        help="Users before and after the spike (0: a fifth of -u, at least 1)",
    )
    add(
        "--spike-at",
        env_var="LOAD_SPIKE_AT_SECONDS",
        type=float,
        default=10.0,
        help="Seconds into the run when the spike starts",
    )
    add(
        "--spike-seconds",
        env_var="LOAD_SPIKE_SECONDS",
        type=float,
        default=10.0,
        help="How long the spike lasts, seconds",
    )
    add(
        "--slo-p95-ms",
        env_var="SLO_P95_MS",
        type=float,
        default=slo.DEFAULT_P95_MS,
        help="Largest acceptable p95 latency over all requests, ms",
    )
    add(
        "--slo-p99-ms",
        env_var="SLO_P99_MS",
        type=float,
        default=slo.DEFAULT_P99_MS,
        help="Largest acceptable p99 latency over all requests, ms",
    )
    add(
        "--slo-max-failure-ratio",
        env_var="SLO_MAX_FAILURE_RATIO",
        type=float,
        default=slo.DEFAULT_MAX_FAILURE_RATIO,
        help="Largest acceptable share of failed requests (0-1)",
    )
    add(
        "--slo-report",
        env_var="SLO_REPORT",
        default="",
        help="Where to write the SLO verdict as JSON (default: <csv prefix>_slo.json with --csv)",
    )


WEIGHT_DEFAULTS = {"json": 3, "image": 2, "b64": 2, "status": 1, "grpc": 1}
WEIGHT_USERS = {
    "json": "JsonPredictUser",
    "image": "ImageUploadUser",
    "b64": "Base64PredictUser",
    "status": "ModelStatusUser",
    "grpc": "GrpcPredictUser",
}


@dataclass
class LoadContext:
    """What every user shares: options, and the payloads encoded once before the run."""

    model_name: str
    grpc_target: str
    feedback_share: float
    batch_size: int
    wait_min: float
    wait_max: float
    headers: dict[str, str]
    samples: mnist_samples.Samples
    payloads: dict[str, list[mnist_samples.Payload]]


def validate_options(options: Any) -> None:
    """Refuse settings that would make a meaningless run, saying which to fix."""
    if not 0 <= options.feedback_share <= 1:
        raise ValueError(
            f"LOAD_FEEDBACK_SHARE must be between 0 and 1, got {options.feedback_share}"
        )
    if not 0 <= options.wait_min <= options.wait_max:
        raise ValueError(
            f"think time must satisfy 0 <= LOAD_WAIT_MIN_SECONDS <= LOAD_WAIT_MAX_SECONDS, "
            f"got {options.wait_min} and {options.wait_max}"
        )
    for name, value in (
        ("LOAD_BATCH_SIZE", options.batch_size),
        ("LOAD_SAMPLE_SIZE", options.sample_size),
    ):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")


def build_context(options: Any) -> LoadContext:
    """Load the MNIST sample and encode every payload kind once."""
    split_seed = options.split_seed if options.split_seed >= 0 else None
    samples = mnist_samples.load_samples(options.sample_size, split_seed=split_seed)
    payloads = {
        kind: mnist_samples.build_payloads(samples, kind, options.batch_size)
        for kind in mnist_samples.PAYLOAD_KINDS
    }
    return LoadContext(
        model_name=options.model_name,
        grpc_target=options.grpc_target,
        feedback_share=options.feedback_share,
        batch_size=options.batch_size,
        wait_min=options.wait_min,
        wait_max=options.wait_max,
        headers={"X-API-Key": options.api_key} if options.api_key else {},
        samples=samples,
        payloads=payloads,
    )


def shape_params(options: Any) -> shapes.ShapeParams:
    """Read the load shape from Locust's -u/-r/-t and the scenario's shape options."""
    users = options.num_users or 1
    return shapes.ShapeParams(
        kind=options.shape,
        users=users,
        spawn_rate=options.spawn_rate or 1.0,
        run_time=float(options.run_time) if options.run_time else None,
        step_users=options.step_users,
        step_seconds=options.step_seconds,
        spike_base_users=options.spike_base_users or max(1, users // 5),
        spike_at_seconds=options.spike_at,
        spike_seconds=options.spike_seconds,
    )


@events.init.add_listener
def on_init(environment: Any, **_kwargs: Any) -> None:
    """Apply the weights, check the options and encode the payloads before any user starts.

    In a distributed run this runs in the master and in every worker, each with its own
    options (the same ones: one command line, or one ConfigMap in Kubernetes). The master
    needs the weights to share users out, but runs no user, so it encodes no payload.
    """
    options = environment.parsed_options
    if options is None:  # pragma: no cover - Locust used as a library brings its own setup
        return
    try:
        validate_options(options)
        thresholds_from(options)
        if environment.shape_class is not None:
            logger.info(shapes.describe(shape_params(options)))
        for kind, name in WEIGHT_USERS.items():
            weight = getattr(options, f"weight_{kind}")
            if weight < 0:
                raise ValueError(f"LOAD_WEIGHT_{kind.upper()} must not be negative, got {weight}")
            USER_CLASSES[name].weight = weight
        environment.user_classes[:] = [cls for cls in environment.user_classes if cls.weight > 0]
        if not environment.user_classes:
            raise ValueError("every user weight is 0; set at least one LOAD_WEIGHT_* above 0")
        if any(issubclass(cls, GatewayUser) for cls in environment.user_classes):
            check_gateway_ready(environment.host)
        if GrpcPredictUser in environment.user_classes:
            enable_grpc_gevent()
            check_grpc_target_ready(options.grpc_target)
            source = grpc_client.import_messages().source
            logger.info("gRPC user calls %s with protos from %s", options.grpc_target, source)
        if isinstance(environment.runner, MasterRunner):
            track_worker_readiness(environment)
        else:
            environment.load_context = build_context(options)
    except (ValueError, ImportError) as error:
        sys.exit(f"load test configuration error: {error}")
    except (GatewayNotReadyError, GrpcTargetNotReadyError) as error:
        sys.exit(str(error))
    logger.info(
        "users: %s",
        ", ".join(f"{cls.__name__}={cls.weight}" for cls in environment.user_classes),
    )
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.send_message(WORKER_READY_MESSAGE)


# --------------------------------------------------------------------------- distributed runs

# A worker connects to the master before its init listener runs, so the master would start
# the clock while workers still encode their payloads (1-2 s each on a busy machine): a short
# run would spend part of its time without users. Each worker says when it is ready, and
# the master's test_start waits for every connected worker before the shape's clock starts.
WORKER_READY_MESSAGE = "loadtests_worker_ready"
WORKER_READY_TIMEOUT_SECONDS = 120.0


def track_worker_readiness(environment: Any) -> None:
    """On the master: remember which workers have said they are ready."""
    environment.ready_workers = set()

    def on_worker_ready(msg: Any, **_kwargs: Any) -> None:
        environment.ready_workers.add(msg.node_id)

    environment.runner.register_message(WORKER_READY_MESSAGE, on_worker_ready)


@events.test_start.add_listener
def wait_for_ready_workers(environment: Any, **_kwargs: Any) -> None:
    """On the master: hold the start until every connected worker has built its payloads."""
    runner = environment.runner
    if not isinstance(runner, MasterRunner):
        return
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_SECONDS
    while not set(runner.clients) <= environment.ready_workers:
        if time.monotonic() > deadline:
            waiting = sorted(set(runner.clients) - environment.ready_workers)
            logger.warning("starting without waiting longer for workers %s", waiting)
            return
        gevent.sleep(0.1)


class GatewayNotReadyError(Exception):
    """The gateway under test did not answer /readyz with 200 before the run."""


def check_gateway_ready(host: str | None, timeout: float = 5.0) -> None:
    """Fail fast when nothing ready listens at `host`, rather than record a run of failures."""
    if not host:
        raise ValueError("no gateway address: pass --host (make load LOAD_HOST=http://...)")
    url = f"{host.rstrip('/')}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status == 200:
                return
            detail = f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        detail = describe_http_error(error.code, error.read().decode(errors="replace"))
    except (urllib.error.URLError, OSError) as error:
        detail = str(getattr(error, "reason", error))
    raise GatewayNotReadyError(
        f"gateway not ready at {url}: {detail}; start the stack with `make up`, "
        "or point LOAD_HOST at a running gateway"
    )


class GrpcTargetNotReadyError(Exception):
    """The model server's gRPC port did not accept a connection before the run."""


def check_grpc_target_ready(target: str, timeout: float = 5.0) -> None:
    """Fail fast when the gRPC user's target does not answer, as check_gateway_ready does
    for the gateway: a run against nothing would only count "connection refused"."""
    import grpc

    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        raise GrpcTargetNotReadyError(
            f"model server not reachable at {target} (gRPC) within {timeout:g}s; start the "
            "stack with `make up`, point LOAD_GRPC_TARGET at a running model server, or "
            "leave the gRPC user out with LOAD_WEIGHT_GRPC=0"
        ) from None
    finally:
        channel.close()


_GEVENT_GRPC_ENABLED = False


def enable_grpc_gevent() -> None:
    """Make gRPC's blocking calls yield to gevent; must precede the first channel."""
    global _GEVENT_GRPC_ENABLED
    if not _GEVENT_GRPC_ENABLED:
        import grpc.experimental.gevent as grpc_gevent

        grpc_gevent.init_gevent()
        _GEVENT_GRPC_ENABLED = True


# --------------------------------------------------------------------------- users


class GatewayUser(FastHttpUser):
    """Shared behaviour of the users that call the gateway over HTTP."""

    abstract = True
    # Response bodies are small; the default connection pool is one per user, as a client.
    network_timeout = 30.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        self.load: LoadContext = self.environment.load_context

    def wait_time(self) -> float:
        return random.uniform(self.load.wait_min, self.load.wait_max)

    def predict(self, kind: str, path: str, name: str) -> None:
        """Send one encoded payload of `kind`; send feedback for a share of the predictions."""
        payload = random.choice(self.load.payloads[kind])
        predictions = None
        with self.client.post(
            path,
            data=payload.body,
            headers={**payload.headers, **self.load.headers},
            name=name,
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(http_failure(response))
            else:
                document = _json_or_none(response)
                problem = check_predict_body(document, len(payload.labels))
                if problem:
                    response.failure(problem)
                else:
                    predictions = document["predictions"]
        if predictions and random.random() < self.load.feedback_share:
            self.send_feedback(predictions, payload.labels)

    def send_feedback(self, predictions: list[dict], labels: tuple[int, ...]) -> None:
        """Tell the gateway the true label of each prediction, as a labelling client would."""
        items = [
            {"prediction_id": prediction["prediction_id"], "label": label}
            for prediction, label in zip(predictions, labels, strict=True)
        ]
        body = items[0] if len(items) == 1 else items
        with self.client.post(
            "/v1/feedback",
            json=body,
            headers=self.load.headers,
            name="/v1/feedback",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(http_failure(response))
            elif problem := check_feedback_body(_json_or_none(response), len(items)):
                response.failure(problem)


class JsonPredictUser(GatewayUser):
    """Sends MNIST digits as JSON arrays of 0-255 pixels."""

    weight = WEIGHT_DEFAULTS["json"]

    @task
    def predict_json(self) -> None:
        model = self.load.model_name
        path = f"/v1/models/{model}/predict"
        self.predict("json", path, f"{path} [json]")


class ImageUploadUser(GatewayUser):
    """Uploads MNIST digits as image files: PNG multipart and JPEG raw body."""

    weight = WEIGHT_DEFAULTS["image"]

    @task
    def predict_png_upload(self) -> None:
        path = f"/v1/models/{self.load.model_name}/predict/image"
        self.predict("png", path, f"{path} [png multipart]")

    @task
    def predict_jpeg_body(self) -> None:
        path = f"/v1/models/{self.load.model_name}/predict/image"
        self.predict("jpeg", path, f"{path} [jpeg body]")


class Base64PredictUser(GatewayUser):
    """Sends MNIST digits as base64 PNG inside JSON."""

    weight = WEIGHT_DEFAULTS["b64"]

    @task
    def predict_b64(self) -> None:
        path = f"/v1/models/{self.load.model_name}/predict"
        self.predict("b64", path, f"{path} [b64]")


class ModelStatusUser(GatewayUser):
    """Reads model status, as a dashboard or a deploy script polling for a rollout would."""

    weight = WEIGHT_DEFAULTS["status"]

    @task(3)
    def read_model_status(self) -> None:
        path = f"/v1/models/{self.load.model_name}"
        with self.client.get(
            path, headers=self.load.headers, name=path, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(http_failure(response))
            elif problem := check_model_status_body(_json_or_none(response), self.load.model_name):
                response.failure(problem)

    @task(1)
    def list_models(self) -> None:
        with self.client.get(
            "/v1/models", headers=self.load.headers, name="/v1/models", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(http_failure(response))
            elif problem := check_model_list_body(_json_or_none(response), self.load.model_name):
                response.failure(problem)


class GrpcPredictUser(User):
    """Calls the model server's PredictionService.Predict directly (a Locust custom client)."""

    weight = WEIGHT_DEFAULTS["grpc"]

    def on_start(self) -> None:
        self.load: LoadContext = self.environment.load_context
        self.client = grpc_client.PredictClient(
            self.load.grpc_target,
            self.load.model_name,
            on_request=self.environment.events.request.fire,
        )
        # Built once: the gRPC user measures the model server, not protobuf encoding.
        images = self.load.samples.images
        size = self.load.batch_size
        self.requests = [
            self.client.make_request(images[start : start + size])
            for start in range(0, len(images) - size + 1, size)
        ]

    def on_stop(self) -> None:
        self.client.close()

    def wait_time(self) -> float:
        return random.uniform(self.load.wait_min, self.load.wait_max)

    @task
    def predict_grpc(self) -> None:
        self.client.predict(random.choice(self.requests))


USER_CLASSES: dict[str, type[User]] = {
    cls.__name__: cls
    for cls in (
        JsonPredictUser,
        ImageUploadUser,
        Base64PredictUser,
        ModelStatusUser,
        GrpcPredictUser,
    )
}


def http_failure(response: Any) -> str:
    """Say why a response failed: the connection error, or the status and error message."""
    if not response.status_code:
        return f"no response: {response.error!r}"
    return describe_http_error(response.status_code, response.text or "")


def _json_or_none(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


# --------------------------------------------------------------------------- load shape


class ConfiguredShape(LoadTestShape):
    """The shape named by `LOAD_SHAPE`; reads -u, -r and -t (use_common_options)."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        if not hasattr(self, "params"):
            self.params = shape_params(self.runner.environment.parsed_options)
        return shapes.target_users(self.params, self.get_run_time())


# --------------------------------------------------------------------------- SLO gate


def thresholds_from(options: Any) -> slo.SloThresholds:
    """Read the SLO thresholds from the options (and so from SLO_* variables)."""
    return slo.SloThresholds(
        p95_ms=options.slo_p95_ms,
        p99_ms=options.slo_p99_ms,
        max_failure_ratio=options.slo_max_failure_ratio,
    )


@events.quitting.add_listener
def check_slos(environment: Any, **_kwargs: Any) -> None:
    """Check the run against its SLOs; a breach sets a non-zero exit code and says why."""
    options = environment.parsed_options
    if options is None or environment.runner is None:  # pragma: no cover - library use
        return
    if isinstance(environment.runner, WorkerRunner):
        return  # a worker holds only its share of the stats; the master judges the run
    total = environment.stats.total
    summary = slo.RunSummary(
        requests=total.num_requests,
        failures=total.num_failures,
        p95_ms=float(total.get_response_time_percentile(0.95) or 0.0),
        p99_ms=float(total.get_response_time_percentile(0.99) or 0.0),
    )
    verdict = slo.evaluate(summary, thresholds_from(options))
    report = options.slo_report or (f"{options.csv_prefix}_slo.json" if options.csv_prefix else "")
    if report:
        verdict.write_json(Path(report))
    if verdict.passed:
        # Failures within the SLO's budget are not a failed run; crashes in user code still are.
        if not environment.runner.exceptions:
            environment.process_exit_code = 0
    else:
        environment.process_exit_code = 1

    @environment.events.quit.add_listener
    def print_verdict(exit_code: int, **_kwargs: Any) -> None:
        # Logged at `quit`, after Locust's stats tables, so the verdict is the last word.
        log = logger.info if verdict.passed else logger.error
        log(verdict.message())
