"""Flags and config files of the embedded model server, under tensorflow_model_server's names.

The flags are the real server's (`--port`, `--rest_api_port`, `--model_config_file`, ...),
accepted as `--flag=value` or `--flag value`; booleans also as a bare `--flag`. The config
files are parsed with TF Serving's own protos and protobuf's text format, so one file works
for both servers.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"


class ConfigError(ValueError):
    """A flag or config file is invalid; the server refuses to start (exit status 1)."""


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """The subset of TF Serving's BatchingParameters the embedded batcher honours."""

    max_batch_size: int = 1000
    # Honoured only while the model is busy: an idle model runs a request at once.
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 100
    num_batch_threads: int = 1
    thread_pool_name: str = "batch_threads"


@dataclasses.dataclass(frozen=True)
class ServerFlags:
    """Parsed command line; defaults are tensorflow_model_server's own."""

    port: int = 8500
    rest_api_port: int = 0
    rest_api_timeout_in_ms: int = 30000
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: int = 1
    enable_batching: bool = False
    batching_parameters_file: str = ""
    monitoring_config_file: str = ""
    enable_model_warmup: bool = True
    allow_version_labels_for_unavailable_models: bool = False
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    # Not a tensorflow_model_server flag (it always binds every interface); tests and the
    # local stack need loopback only.
    bind_address: str = "0.0.0.0"


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_arg_parser() -> argparse.ArgumentParser:
    """An argparse parser for tensorflow_model_server's flags (TF Serving's names)."""
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Embedded model server: TF Serving's protocol, flags and config files.",
        allow_abbrev=False,
    )
    defaults = ServerFlags()
    for field in dataclasses.fields(ServerFlags):
        default = getattr(defaults, field.name)
        if isinstance(default, bool):
            parser.add_argument(
                f"--{field.name}",
                type=_parse_bool,
                nargs="?",
                const=True,
                default=default,
                metavar="BOOL",
            )
        else:
            parser.add_argument(
                f"--{field.name}", type=type(default), default=default, metavar="VALUE"
            )
    return parser


def parse_flags(argv: Sequence[str]) -> ServerFlags:
    """Parse a command line into ServerFlags; raise ConfigError when it is inconsistent."""
    namespace = build_arg_parser().parse_args(list(argv))
    flags = ServerFlags(**vars(namespace))
    if flags.model_config_file and flags.model_base_path:
        raise ConfigError("--model_config_file and --model_base_path are mutually exclusive")
    if not flags.model_config_file and not flags.model_base_path:
        raise ConfigError("Both server_model_config_file and model_base_path are empty!")
    if flags.batching_parameters_file and not flags.enable_batching:
        raise ConfigError("--batching_parameters_file requires --enable_batching")
    return flags


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


def load_model_server_config(flags: ServerFlags) -> model_server_config_pb2.ModelServerConfig:
    """The ModelServerConfig the flags describe: the config file, or one model from flags."""
    if flags.model_config_file:
        config = read_model_config_file(flags.model_config_file)
    else:
        config = model_server_config_pb2.ModelServerConfig()
        model = config.model_config_list.config.add()
        model.name = flags.model_name
        model.base_path = flags.model_base_path
        model.model_platform = "tensorflow"
    validate_model_server_config(config)
    return config


def read_model_config_file(path: str | Path) -> model_server_config_pb2.ModelServerConfig:
    """Parse a --model_config_file (text-format ModelServerConfig)."""
    return parse_text_proto(path, model_server_config_pb2.ModelServerConfig())


def validate_model_server_config(config: model_server_config_pb2.ModelServerConfig) -> None:
    """Refuse what TF Serving refuses: custom configs, duplicate names, other platforms."""
    if config.WhichOneof("config") == "custom_model_config":
        raise ConfigError("custom_model_config is not supported by the embedded server")
    seen: set[str] = set()
    for model in config.model_config_list.config:
        if not model.name:
            raise ConfigError("a model config has no name")
        if model.name in seen:
            raise ConfigError(f"Illegal to list model {model.name} multiple times in config list")
        seen.add(model.name)
        if not model.base_path:
            raise ConfigError(f"model {model.name} has no base_path")
        if model.model_platform not in ("", "tensorflow"):
            raise ConfigError(
                f"model {model.name}: platform {model.model_platform!r} is not supported "
                "(only 'tensorflow')"
            )


def _config_protos():
    try:
        from serving._proto import tf_serving_configs_pb2
    except ImportError:
        raise ConfigError(
            "serving/_proto is not built: run `make serving-protos` (or `make install`)"
        ) from None
    return tf_serving_configs_pb2


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Everything the flags point at, read and validated before TensorFlow is imported."""

    flags: ServerFlags
    models: model_server_config_pb2.ModelServerConfig
    batching: BatchingOptions | None
    metrics_path: str | None


def load_server_config(flags: ServerFlags) -> ServerConfig:
    """Read every config file the flags name; ConfigError on the first invalid one."""
    return ServerConfig(
        flags,
        load_model_server_config(flags),
        load_batching_options(flags),
        load_metrics_path(flags),
    )


def load_batching_options(flags: ServerFlags) -> BatchingOptions | None:
    """BatchingOptions from --batching_parameters_file (TF Serving's BatchingParameters)."""
    if not flags.enable_batching:
        return None
    if not flags.batching_parameters_file:
        return BatchingOptions()
    tf_serving_configs_pb2 = _config_protos()
    params = parse_text_proto(
        flags.batching_parameters_file, tf_serving_configs_pb2.BatchingParameters()
    )
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
    tf_serving_configs_pb2 = _config_protos()
    config = parse_text_proto(
        flags.monitoring_config_file, tf_serving_configs_pb2.MonitoringConfig()
    )
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    return prometheus.path or DEFAULT_METRICS_PATH
