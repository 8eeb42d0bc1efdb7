"""The command line of `python -m serving`: tensorflow_model_server's flags, names and help.

Every flag of tensorflow_model_server (model_servers/main.cc) is accepted, as `--flag=value`
or `--flag value`, booleans also bare (`--enable_batching`). Flags the embedded server has no
use for (TLS, TPU, thread-pool sizes of the C++ server...) are accepted with a warning that
they have no effect, so a production command line runs unchanged. As in tensorflow_model_server,
an unknown argument is reported ("unknown argument: ...", then the usage) and the server
starts anyway; a malformed value for a known flag prints the usage and exits.

A few flags are embedded-server extensions (marked EXTENSION in --help, and listed in
docs/CONTRACTS.md): `--bind_address`, `--max_request_tensor_bytes`, `--rest_api_max_body_bytes`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence

log = logging.getLogger("serving")


class FlagError(ValueError):
    """The flags cannot describe a server (tensorflow_model_server's BuildAndStart refusals):
    the process exits with status 1 before loading anything."""


def _flag(default, help_text: str, *, used: bool = True, extension: bool = False):
    return dataclasses.field(
        default=default, metadata={"help": help_text, "used": used, "extension": extension}
    )


@dataclasses.dataclass(frozen=True)
class ServerFlags:
    """Parsed command line; defaults and help texts are tensorflow_model_server's own."""

    port: int = _flag(
        8500, "TCP port to listen on for gRPC/HTTP API. Disabled if port set to zero."
    )
    grpc_socket_path: str = _flag(
        "",
        "If non-empty, listen to a UNIX socket for gRPC API on the given path. Can be either "
        "relative or absolute path.",
    )
    rest_api_port: int = _flag(
        0,
        "Port to listen on for HTTP/REST API. If set to zero HTTP/REST API will not be "
        "exported. This port must be different than the one specified in --port.",
    )
    rest_api_num_threads: int = _flag(
        0,
        "Number of threads for HTTP/REST API processing. If not set, will be auto set based "
        "on number of CPUs.",
        used=False,
    )
    rest_api_timeout_in_ms: int = _flag(30000, "Timeout for HTTP/REST API calls.")
    rest_api_enable_cors_support: bool = _flag(False, "Enable CORS headers in response")
    enable_batching: bool = _flag(False, "enable batching")
    allow_version_labels_for_unavailable_models: bool = _flag(
        False,
        "If true, allows assigning unused version labels to models that are not available yet.",
    )
    batching_parameters_file: str = _flag(
        "",
        "If non-empty, read an ascii BatchingParameters protobuf from the supplied file name "
        "and use the contained values instead of the defaults.",
    )
    enable_per_model_batching_parameters: bool = _flag(
        False,
        "Enables model specific batching params like batch sizes, timeouts, batching feature "
        "flags to be read from `batching_params.pbtxt` file present in SavedModel dir of the "
        "model.",
        used=False,
    )
    model_config_file: str = _flag(
        "",
        "If non-empty, read an ascii ModelServerConfig protobuf from the supplied file name, "
        "and serve the models in that file. This config file can be used to specify multiple "
        "models to serve and other advanced parameters including non-default version policy. "
        "(If used, --model_name, --model_base_path are ignored.)",
    )
    model_config_file_poll_wait_seconds: int = _flag(
        0,
        "Interval in seconds between each poll of the filesystem for model_config_file. If "
        "unset or set to zero, poll will be done exactly once and not periodically.",
    )
    model_name: str = _flag("default", "name of model (ignored if --model_config_file flag is set)")
    model_base_path: str = _flag(
        "",
        "path to export (ignored if --model_config_file flag is set, otherwise required)",
    )
    num_load_threads: int = _flag(
        0, "The number of threads in the thread-pool used to load servables.", used=False
    )
    num_unload_threads: int = _flag(
        0, "The number of threads in the thread-pool used to unload servables.", used=False
    )
    max_num_load_retries: int = _flag(
        5,
        "maximum number of times it retries loading a model after the first failure, before "
        "giving up. (The embedded server retries a failed version once its directory "
        "changes.)",
        used=False,
    )
    load_retry_interval_micros: int = _flag(
        60_000_000,
        "The interval, in microseconds, between each servable load retry.",
        used=False,
    )
    file_system_poll_wait_seconds: int = _flag(
        1,
        "Interval in seconds between each poll of the filesystem for new model version. If "
        "set to zero poll will be exactly done once and not periodically.",
    )
    flush_filesystem_caches: bool = _flag(
        True,
        "If true (the default), filesystem caches will be flushed after the initial load of "
        "all servables.",
        used=False,
    )
    tensorflow_session_parallelism: int = _flag(
        0,
        "Number of threads to use for running a Tensorflow session. Auto-configured by default.",
    )
    tensorflow_session_config_file: str = _flag(
        "",
        "If non-empty, read an ascii TensorFlow Session ConfigProto protobuf from the "
        "supplied file name.",
        used=False,
    )
    tensorflow_intra_op_parallelism: int = _flag(
        0,
        "Number of threads to use to parallelize the execution of an individual op. "
        "Auto-configured by default.",
    )
    tensorflow_inter_op_parallelism: int = _flag(
        0,
        "Controls the number of operators that can be executed simultaneously. "
        "Auto-configured by default.",
    )
    use_alts_credentials: bool = _flag(False, "Use Google ALTS credentials", used=False)
    ssl_config_file: str = _flag(
        "",
        "If non-empty, read an ascii SSLConfig protobuf from the supplied file name and set "
        "up a secure gRPC channel",
        used=False,
    )
    platform_config_file: str = _flag(
        "",
        "If non-empty, read an ascii PlatformConfigMap protobuf from the supplied file name, "
        "and use that platform config instead of the Tensorflow platform.",
        used=False,
    )
    per_process_gpu_memory_fraction: float = _flag(
        0.0,
        "Fraction that each process occupies of the GPU memory space the value is between "
        "0.0 and 1.0 (with 0.0 as the default).",
        used=False,
    )
    saved_model_tags: str = _flag(
        "serve",
        "Comma-separated set of tags corresponding to the meta graph def to load from SavedModel.",
    )
    grpc_channel_arguments: str = _flag(
        "",
        "A comma separated list of arguments to be passed to the grpc server. (e.g. "
        "grpc.max_connection_age_ms=2000)",
    )
    grpc_max_threads: int = _flag(0, "Max grpc server threads to handle grpc messages.", used=False)
    enable_model_warmup: bool = _flag(
        True,
        "Enables model warmup, which triggers lazy initializations (such as TF "
        "optimizations) at load time, to reduce first request latency.",
    )
    num_request_iterations_for_warmup: int = _flag(
        0,
        "Number of times a request is iterated during warmup replay. This value is used only "
        "if > 0.",
    )
    version: bool = _flag(False, "Display version")
    monitoring_config_file: str = _flag(
        "",
        "If non-empty, read an ascii MonitoringConfig protobuf from the supplied file name",
    )
    remove_unused_fields_from_bundle_metagraph: bool = _flag(
        True,
        "Removes unused fields from MetaGraphDef proto message to save memory.",
        used=False,
    )
    prefer_tflite_model: bool = _flag(
        False,
        "EXPERIMENTAL; CAN BE REMOVED ANYTIME! Prefer TensorFlow Lite model from "
        "`model.tflite` file in SavedModel directory.",
        used=False,
    )
    num_tflite_pools: int = _flag(
        0, "EXPERIMENTAL; CAN BE REMOVED ANYTIME! Number of TFLite interpreter pools.", used=False
    )
    num_tflite_interpreters_per_pool: int = _flag(
        1,
        "EXPERIMENTAL; CAN BE REMOVED ANYTIME! Number of TFLite interpreters in an "
        "interpreter pool of TfLiteSession.",
        used=False,
    )
    enable_signature_method_name_check: bool = _flag(
        False,
        "Enable method_name check for SignatureDef. Disable this if serving native TF2 "
        "regression/classification models.",
    )
    xla_cpu_compilation_enabled: bool = _flag(
        False,
        "EXPERIMENTAL; CAN BE REMOVED ANYTIME! Enable XLA:CPU JIT (default is disabled).",
        used=False,
    )
    xla_gpu_compilation_enabled: bool = _flag(
        False,
        "EXPERIMENTAL; CAN BE REMOVED ANYTIME! Enable both XLA:CPU JIT and XLA:GPU JIT "
        "(default is disabled).",
        used=False,
    )
    enable_profiler: bool = _flag(True, "Enable profiler service.", used=False)
    thread_pool_factory_config_file: str = _flag(
        "",
        "If non-empty, read an ascii ThreadPoolConfig protobuf from the supplied file name.",
        used=False,
    )
    mixed_precision: str = _flag("", "specify mixed_precision mode", used=False)
    skip_initialize_tpu: bool = _flag(False, "Whether to skip auto initializing TPU.", used=False)
    enable_grpc_healthcheck_service: bool = _flag(
        False,
        "Enable the standard gRPC healthcheck service. (The embedded server always serves "
        "it; see docs/CONTRACTS.md.)",
        used=False,
    )
    enable_serialization_as_tensor_content: bool = _flag(
        False, "Enable serialization of predict response as tensor content."
    )
    # Embedded-server extensions: tensorflow_model_server has no such flags.
    bind_address: str = _flag(
        "0.0.0.0",
        "EXTENSION: the interface both ports listen on (tensorflow_model_server always binds "
        "every interface). The local stack and the tests use 127.0.0.1.",
        extension=True,
    )
    max_request_tensor_bytes: int = _flag(
        256 * 1024 * 1024,
        "EXTENSION: refuse (INVALID_ARGUMENT) a request whose decoded input tensors would "
        "take more than this many bytes, before allocating them. 0 disables the limit.",
        extension=True,
    )
    rest_api_max_body_bytes: int = _flag(
        64 * 1024 * 1024,
        "EXTENSION: refuse (HTTP 413) a REST request body larger than this many bytes.",
        extension=True,
    )


UNUSED_FLAGS = frozenset(
    f.name for f in dataclasses.fields(ServerFlags) if not f.metadata.get("used", True)
)


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _UsageExit(argparse.ArgumentParser):
    """tensorflow::Flags::Parse prints the usage and returns -1 on a malformed value."""

    def error(self, message: str):
        self.print_help(sys.stdout)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(255)


def build_arg_parser() -> argparse.ArgumentParser:
    """An argparse parser for tensorflow_model_server's flags, with TF Serving's help texts."""
    parser = _UsageExit(
        prog="python -m serving",
        description=(
            "Embedded model server: TF Serving's gRPC and REST protocols, flags and config "
            "files. Flags marked EXTENSION are the embedded server's own."
        ),
        allow_abbrev=False,
    )
    defaults = ServerFlags()
    for field in dataclasses.fields(ServerFlags):
        default = getattr(defaults, field.name)
        help_text = field.metadata["help"]
        if not field.metadata.get("used", True):
            help_text += " (accepted; no effect in the embedded server)"
        help_text += f" [default: {default!r}]".replace("%", "%%")
        if isinstance(default, bool):
            parser.add_argument(
                f"--{field.name}",
                type=_parse_bool,
                nargs="?",
                const=True,
                default=default,
                metavar="BOOL",
                help=help_text,
            )
        else:
            parser.add_argument(
                f"--{field.name}",
                type=type(default),
                default=default,
                metavar=type(default).__name__.upper(),
                help=help_text,
            )
    return parser


def parse_flags(argv: Sequence[str]) -> ServerFlags:
    """Parse a command line as tensorflow_model_server does; FlagError when it is unusable."""
    parser = build_arg_parser()
    namespace, unknown = parser.parse_known_args(list(argv))
    if unknown:
        # main.cc: `std::cout << "unknown argument: " << argv[1] << "\n" << usage;`, then on.
        print(f"unknown argument: {unknown[0]}")
        parser.print_help(sys.stdout)
    flags = ServerFlags(**vars(namespace))
    for name in sorted(UNUSED_FLAGS):
        if getattr(flags, name) != getattr(ServerFlags, name):
            log.warning("--%s is accepted for compatibility but has no effect here", name)
    if flags.version:
        return flags
    # server.cc BuildAndStart's refusals, in its order and words.
    if flags.port == 0 and not flags.grpc_socket_path:
        raise FlagError(
            "At least one of server_options.grpc_port or server_options.grpc_socket_path "
            "must be set."
        )
    if not flags.model_base_path and not flags.model_config_file:
        raise FlagError(
            "Both server_options.model_base_path and server_options.model_config_file are empty!"
        )
    if flags.batching_parameters_file and not flags.enable_batching:
        raise FlagError(
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    if (
        flags.tensorflow_intra_op_parallelism > 0
        and flags.tensorflow_inter_op_parallelism > 0
        and flags.tensorflow_session_parallelism > 0
    ):
        raise FlagError(
            "Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, "
            "server_options.tensorflow_inter_op_parallelism) separately. You cannot "
            "configure all."
        )
    return flags


def thread_counts(flags: ServerFlags) -> tuple[int, int]:
    """(intra-op, inter-op) TensorFlow threads, as server.cc derives them (0 = automatic)."""
    if flags.tensorflow_intra_op_parallelism > 0 or flags.tensorflow_inter_op_parallelism > 0:
        return flags.tensorflow_intra_op_parallelism, flags.tensorflow_inter_op_parallelism
    return flags.tensorflow_session_parallelism, flags.tensorflow_session_parallelism


def grpc_channel_arguments(flags: ServerFlags) -> list[tuple[str, int | str]]:
    """--grpc_channel_arguments as gRPC server options: ints where they parse, else strings."""
    arguments: list[tuple[str, int | str]] = []
    for item in flags.grpc_channel_arguments.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not key:
            continue
        try:
            arguments.append((key, int(value)))
        except ValueError:
            arguments.append((key, value))
    return arguments
