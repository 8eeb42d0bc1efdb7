"""Flags and config files: TF Serving's names and syntax, parsed with its own protos."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.config import (
    DEFAULT_METRICS_PATH,
    ConfigError,
    load_batching_options,
    load_metrics_path,
    load_model_server_config,
    parse_flags,
    read_model_config_file,
)
from tests.fixtures.serving import SERVING_CONFIG_DIR

ARGS_FILE = SERVING_CONFIG_DIR / "tensorflow_model_server.args"


def test_flags_accept_both_syntaxes_and_bare_booleans():
    flags = parse_flags(
        ["--port", "9000", "--rest_api_port=9001", "--model_name=m", "--model_base_path", "/m",
         "--enable_batching", "--enable_model_warmup=false"]
    )  # fmt: skip
    assert (flags.port, flags.rest_api_port, flags.model_name) == (9000, 9001, "m")
    assert flags.enable_batching is True
    assert flags.enable_model_warmup is False


def test_defaults_are_tensorflow_model_servers():
    flags = parse_flags(["--model_base_path=/m"])
    assert flags.port == 8500
    assert flags.rest_api_port == 0  # REST is off unless asked for, as in TF Serving
    assert flags.file_system_poll_wait_seconds == 1
    assert flags.enable_model_warmup is True
    assert flags.model_name == "default"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--model_base_path=/m", "--model_config_file=/c"],
        ["--model_base_path=/m", "--batching_parameters_file=/b"],
    ],
    ids=["no-model", "both-sources", "batching-file-without-batching"],
)
def test_inconsistent_flags_are_refused(argv):
    with pytest.raises(ConfigError):
        parse_flags(argv)


def test_unknown_flag_exits_like_a_cli(capsys):
    with pytest.raises(SystemExit):
        parse_flags(["--model_base_path=/m", "--no_such_flag=1"])
    assert "no_such_flag" in capsys.readouterr().err


def test_shipped_models_config_parses_with_tf_servings_proto():
    config = read_model_config_file(SERVING_CONFIG_DIR / "models.config")
    (model,) = config.model_config_list.config
    assert model.name == "mnist"
    assert model.base_path == "/models/mnist"
    assert model.model_version_policy.latest.num_versions == 2
    assert dict(model.version_labels) == {"stable": 1, "canary": 2}


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


def test_config_errors_name_the_file(tmp_path):
    broken = tmp_path / "models.config"
    broken.write_text("model_config_list { config { nme: 'x' } }")
    with pytest.raises(ConfigError, match=r"models\.config"):
        read_model_config_file(broken)
    duplicated = tmp_path / "dup.config"
    duplicated.write_text(
        "model_config_list { config { name: 'a' base_path: '/a' }"
        " config { name: 'a' base_path: '/b' } }"
    )
    with pytest.raises(ConfigError, match="multiple times"):
        load_model_server_config(parse_flags([f"--model_config_file={duplicated}"]))


def test_disabled_prometheus_means_no_metrics_path(tmp_path):
    config = tmp_path / "monitoring.config"
    config.write_text("prometheus_config { enable: false }")
    flags = parse_flags(["--model_base_path=/m", f"--monitoring_config_file={config}"])
    assert load_metrics_path(flags) is None
