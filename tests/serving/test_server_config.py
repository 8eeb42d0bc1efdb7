"""Config files as TF Serving parses and validates them, with its own message definitions."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.flags import parse_flags
from serving.server_config import (
    DEFAULT_METRICS_PATH,
    ConfigError,
    batching_parameters_message,
    load_batching_options,
    load_metrics_path,
    load_model_server_config,
    read_model_config_file,
)
from tests.fixtures.serving import SERVING_CONFIG_DIR

ARGS_FILE = SERVING_CONFIG_DIR / "tensorflow_model_server.args"


def test_shipped_models_config_parses_with_tf_servings_proto():
    """The seed of the rollout controller's config: the versions it names, nothing else."""
    config = read_model_config_file(SERVING_CONFIG_DIR / "models.config")
    (model,) = config.model_config_list.config
    assert model.name == "mnist"
    assert model.base_path == "/models/mnist"
    assert list(model.model_version_policy.specific.versions) == [1]
    assert dict(model.version_labels) == {"stable": 1}


def test_shipped_batching_and_monitoring_configs_parse():
    flags = parse_flags(
        ["--model_base_path=/m", "--enable_batching",
         f"--batching_parameters_file={SERVING_CONFIG_DIR / 'batching.config'}",
         f"--monitoring_config_file={SERVING_CONFIG_DIR / 'monitoring.config'}"]
    )  # fmt: skip
    options = load_batching_options(flags)
    assert options is not None
    assert options.max_batch_size == 64
    assert options.num_batch_threads >= 1
    assert load_metrics_path(flags) == DEFAULT_METRICS_PATH


def test_args_file_is_one_flag_per_line_that_the_embedded_server_accepts():
    lines = [
        line.strip()
        for line in ARGS_FILE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert all(line.startswith("--") and " " not in line for line in lines)
    names = {line.split("=", 1)[0] for line in lines}
    for required in (
        "--port", "--rest_api_port", "--model_config_file",
        "--model_config_file_poll_wait_seconds", "--enable_batching",
        "--batching_parameters_file", "--monitoring_config_file", "--enable_model_warmup",
    ):  # fmt: skip
        assert required in names
    flags = parse_flags(lines)  # the embedded server takes the production command line
    assert (flags.port, flags.rest_api_port) == (8500, 8501)
    assert flags.enable_batching and flags.enable_model_warmup
    # Every config file it names is one of ours, mounted at /etc/tfserving.
    for line in lines:
        if line.endswith((".config",)):
            mounted = Path(line.split("=", 1)[1])
            assert (SERVING_CONFIG_DIR / mounted.name).is_file()


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        (
            "model_config_list { config { name: 'a' base_path: '/a' } }",
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            "ModelServerConfig::model_platform, model name is a",
        ),
        (
            "model_config_list { config { name: 'a' base_path: 'rel/a' model_platform: "
            "'tensorflow' } }",
            "Expected model a to have an absolute path or URI; got base_path()=rel/a",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/a' model_platform: 'onnx' } }",
            "Model a requests unsupported platform onnx",
        ),
    ],
    ids=["no-platform", "relative-base-path", "other-platform"],
)
def test_server_core_refusals(tmp_path, config_text, message):
    config = tmp_path / "models.config"
    config.write_text(config_text)
    with pytest.raises(ConfigError) as refused:
        load_model_server_config(parse_flags([f"--model_config_file={config}"]))
    assert str(refused.value) == message


def test_batching_parameters_are_tf_servings_message(tmp_path):
    """session_bundle_config.proto's BatchingParameters: BoolValue fields, every field."""
    params = batching_parameters_message()
    assert params.DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
    assert params.DESCRIPTOR.file.name.endswith("session_bundle_config.proto")
    bool_field = params.DESCRIPTOR.fields_by_name["enable_large_batch_splitting"]
    assert bool_field.message_type.full_name == "google.protobuf.BoolValue"
    config = tmp_path / "batching.config"
    config.write_text(
        "max_batch_size { value: 8 }\n"
        "enable_large_batch_splitting { value: true }\n"
        "max_execution_batch_size { value: 4 }\n"
        "allowed_batch_sizes: 4\nallowed_batch_sizes: 8\n"
        "pad_variable_length_inputs: true\n"
    )
    flags = parse_flags(
        ["--model_base_path=/m", "--enable_batching", f"--batching_parameters_file={config}"]
    )
    assert load_batching_options(flags).max_batch_size == 8


def test_batching_without_a_file_uses_tf_servings_pool_name():
    options = load_batching_options(parse_flags(["--model_base_path=/m", "--enable_batching"]))
    assert options.thread_pool_name == "model_server_batch_threads"


def test_base_path_flag_is_used_as_given():
    config = load_model_server_config(parse_flags(["--model_base_path=/m/x", "--model_name=a"]))
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("a", "/m/x", "tensorflow")


def test_config_errors_name_the_file(tmp_path):
    broken = tmp_path / "models.config"
    broken.write_text("model_config_list { config { nme: 'x' } }")
    with pytest.raises(ConfigError, match=r"models\.config"):
        read_model_config_file(broken)
    duplicated = tmp_path / "dup.config"
    duplicated.write_text(
        "model_config_list { config { name: 'a' base_path: '/a' model_platform: 'tensorflow' }"
        " config { name: 'a' base_path: '/b' model_platform: 'tensorflow' } }"
    )
    with pytest.raises(ConfigError, match="multiple times"):
        load_model_server_config(parse_flags([f"--model_config_file={duplicated}"]))


def test_disabled_prometheus_means_no_metrics_path(tmp_path):
    config = tmp_path / "monitoring.config"
    config.write_text("prometheus_config { enable: false }")
    flags = parse_flags(["--model_base_path=/m", f"--monitoring_config_file={config}"])
    assert load_metrics_path(flags) is None
