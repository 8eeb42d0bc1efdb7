"""What the flags point at: the model, batching and monitoring config files, read and checked.

The files are TF Serving's text-format protos, parsed with TF Serving's own message
definitions: ModelServerConfig from tensorflow-serving-api, BatchingParameters
(session_bundle_config.proto) and MonitoringConfig (monitoring_config.proto) vendored
unchanged under serving/protos/ and compiled by `make serving-protos`. One file therefore
works for both servers. All of this runs before TensorFlow's slow import, so a typo fails
at once.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.flags import FlagError, ServerFlags

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"
CONFIG_DESCRIPTORS = Path(__file__).resolve().parent / "_proto" / "tf_serving_configs.binpb"
# server.cc: without --batching_parameters_file the pool gets this name.
DEFAULT_BATCH_THREAD_POOL = "model_server_batch_threads"


class ConfigError(FlagError):
    """A config file is unreadable or invalid: the server refuses to start (exit status 1),
    a reload is refused (INVALID_ARGUMENT) and the previous config stays."""


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """The BatchingParameters the embedded batcher honours; defaults are TF Serving's."""

    max_batch_size: int = 1000
    # Honoured only while the model is busy: an idle model runs a request at once.
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 100
    num_batch_threads: int = 1
    thread_pool_name: str = "batch_threads"


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Everything the flags point at, read and validated before TensorFlow is imported."""

    flags: ServerFlags
    models: model_server_config_pb2.ModelServerConfig
    batching: BatchingOptions | None
    metrics_path: str | None


@functools.cache
def _config_messages() -> dict[str, Any]:
    """BatchingParameters and MonitoringConfig classes, from the compiled descriptor set.

    A private pool: the set carries TensorFlow's own config.proto descriptors (an import of
    session_bundle_config.proto), which must not clash with TensorFlow's in the default pool.
    """
    if not CONFIG_DESCRIPTORS.exists():
        raise ConfigError(
            f"{CONFIG_DESCRIPTORS} is missing: run `make serving-protos` (or `make install`)"
        )
    files = descriptor_pb2.FileDescriptorSet.FromString(CONFIG_DESCRIPTORS.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file_proto in files.file:  # dependencies first (--include_imports)
        pool.Add(file_proto)
    return {
        name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"tensorflow.serving.{name}")
        )
        for name in ("BatchingParameters", "MonitoringConfig")
    }


def batching_parameters_message():
    """A new, empty tensorflow.serving.BatchingParameters (TF Serving's definition)."""
    return _config_messages()["BatchingParameters"]()


def monitoring_config_message():
    """A new, empty tensorflow.serving.MonitoringConfig (TF Serving's definition)."""
    return _config_messages()["MonitoringConfig"]()


def parse_text_proto(path: str | Path, message):
    """Parse a text-format proto file into `message` (returned); ConfigError names the file."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise ConfigError(f"{path}: {error}") from None


def read_model_config_file(path: str | Path) -> model_server_config_pb2.ModelServerConfig:
    """Parse a --model_config_file (text-format ModelServerConfig)."""
    return parse_text_proto(path, model_server_config_pb2.ModelServerConfig())


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    """server.cc BuildSingleModelConfig: one model from --model_name/--model_base_path."""
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name=name, base_path=base_path, model_platform="tensorflow")
    return config


def load_model_server_config(flags: ServerFlags) -> model_server_config_pb2.ModelServerConfig:
    """The ModelServerConfig the flags describe: the config file wins over --model_base_path."""
    if flags.model_config_file:
        config = read_model_config_file(flags.model_config_file)
    else:
        # Used as given: a relative path is refused below, as tensorflow_model_server does.
        config = single_model_config(flags.model_name, flags.model_base_path)
    validate_model_server_config(config)
    return config


def _is_relative_path(uri: str) -> bool:
    """server_core.cc UriIsRelativePath: no scheme, no host, and not an absolute path."""
    return "://" not in uri and not uri.startswith("/")


def validate_model_server_config(config: model_server_config_pb2.ModelServerConfig) -> None:
    """Refuse what server_core.cc refuses, in its words; and what the embedded server lacks."""
    which = config.WhichOneof("config")
    if which == "custom_model_config":
        raise ConfigError("custom_model_config is not supported by the embedded server")
    seen: set[str] = set()
    for model in config.model_config_list.config:
        if model.name in seen:
            raise ConfigError(f"Illegal to list model {model.name} multiple times in config list")
        seen.add(model.name)
    for model in config.model_config_list.config:
        if _is_relative_path(model.base_path):
            raise ConfigError(
                f"Expected model {model.name} to have an absolute path or URI; got "
                f"base_path()={model.base_path}"
            )
    for model in config.model_config_list.config:
        platform = _platform(model)
        if platform != "tensorflow":
            raise ConfigError(f"Model {model.name} requests unsupported platform {platform}")
        if "://" in model.base_path:
            raise ConfigError(
                f"model {model.name}: base_path {model.base_path} is a URI; the embedded "
                "server reads local paths only"
            )


def _platform(model: model_server_config_pb2.ModelConfig) -> str:
    """server_core.cc GetPlatform: model_platform, or the deprecated model_type."""
    if model.model_type != 0:  # MODEL_TYPE_UNSPECIFIED
        if model.model_platform:
            raise ConfigError(
                "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                f"ModelServerConfig::model_platform, model name is {model.name}"
            )
        if model.model_type == 1:  # TENSORFLOW
            return "tensorflow"
        raise ConfigError(f"ModelServerConfig::model_type choice {model.model_type} not supported.")
    if not model.model_platform:
        raise ConfigError(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform, model name is {model.name}"
        )
    return model.model_platform


def load_batching_options(flags: ServerFlags) -> BatchingOptions | None:
    """BatchingOptions from --batching_parameters_file (TF Serving's BatchingParameters)."""
    if not flags.enable_batching:
        return None
    if not flags.batching_parameters_file:
        return BatchingOptions(thread_pool_name=DEFAULT_BATCH_THREAD_POOL)
    params = parse_text_proto(flags.batching_parameters_file, batching_parameters_message())
    # Each field is a wrapper message in the proto: unset means TF Serving's default.
    options = dataclasses.replace(
        BatchingOptions(),
        **{
            field.name: getattr(params, field.name).value
            for field in dataclasses.fields(BatchingOptions)
            if params.HasField(field.name)
        },
    )
    if options.max_batch_size < 1 or options.num_batch_threads < 1:
        raise ConfigError("max_batch_size and num_batch_threads must be >= 1")
    if options.max_enqueued_batches < 1:
        raise ConfigError("max_enqueued_batches must be >= 1")
    return options


def load_metrics_path(flags: ServerFlags) -> str | None:
    """The Prometheus path from --monitoring_config_file, or None when export is off."""
    if not flags.monitoring_config_file:
        return None
    config = parse_text_proto(flags.monitoring_config_file, monitoring_config_message())
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    return prometheus.path or DEFAULT_METRICS_PATH


def load_server_config(flags: ServerFlags) -> ServerConfig:
    """Read every config file the flags name; ConfigError on the first invalid one."""
    return ServerConfig(
        flags,
        load_model_server_config(flags),
        load_batching_options(flags),
        load_metrics_path(flags),
    )
