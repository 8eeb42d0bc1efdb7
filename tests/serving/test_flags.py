"""The command line: tensorflow_model_server's flags, defaults, help and refusals."""

from __future__ import annotations

import subprocess
import sys

import pytest

from serving.flags import (
    UNUSED_FLAGS,
    FlagError,
    ServerFlags,
    build_arg_parser,
    grpc_channel_arguments,
    parse_flags,
    thread_counts,
)
from tests.fixtures.processes import REPO_ROOT

FLAGS_FILE = REPO_ROOT / "tests" / "serving" / "testdata" / "tensorflow_model_server_flags.txt"


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
    assert flags.rest_api_timeout_in_ms == 30000
    assert flags.saved_model_tags == "serve"
    assert flags.enable_signature_method_name_check is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "Both server_options.model_base_path and server_options.model_config_file are empty!"),
        (
            ["--model_base_path=/m", "--batching_parameters_file=/b"],
            "batching_parameters_file is set without setting server_options.enable_batching",
        ),
        (["--model_base_path=/m", "--port=0"], "At least one of server_options.grpc_port"),
        (
            [
                "--model_base_path=/m",
                "--tensorflow_session_parallelism=1",
                "--tensorflow_intra_op_parallelism=1",
                "--tensorflow_inter_op_parallelism=1",
            ],
            "You cannot configure all.",
        ),
    ],
    ids=["no-model", "batching-file-without-batching", "no-port", "all-parallelisms"],
)
def test_flags_tf_serving_refuses_are_refused_in_its_words(argv, message):
    with pytest.raises(FlagError) as refused:
        parse_flags(argv)
    assert message in str(refused.value)


def test_config_file_and_base_path_together_start_and_the_file_wins():
    flags = parse_flags(["--model_base_path=/m", "--model_config_file=/c"])
    assert flags.model_config_file == "/c"  # server_config reads the file, not the path


def test_unknown_flag_is_reported_like_tf_serving_and_parsing_goes_on(capsys):
    flags = parse_flags(["--model_base_path=/m", "--no_such_flag=1", "--port=9"])
    out = capsys.readouterr().out
    assert out.startswith("unknown argument: --no_such_flag=1\n")
    assert "--model_config_file" in out  # followed by the usage, as main.cc prints it
    assert flags.port == 9


def test_a_malformed_value_prints_the_usage_and_exits(capsys):
    with pytest.raises(SystemExit) as exited:
        parse_flags(["--model_base_path=/m", "--port=eighty"])
    assert exited.value.code == 255  # main.cc returns -1
    assert "--port" in capsys.readouterr().out


def test_every_tf_serving_flag_is_accepted():
    """Every flag main.cc declares (the list is extracted from TF Serving's source)."""
    declared = {
        line.strip()
        for line in FLAGS_FILE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert len(declared) > 40
    ours = {action.dest for action in build_arg_parser()._actions if action.dest != "help"}
    assert declared <= ours, declared - ours


def test_unused_flags_warn_that_they_have_no_effect(caplog):
    caplog.set_level("WARNING", logger="serving")
    parse_flags(["--model_base_path=/m", "--rest_api_num_threads=8", "--grpc_max_threads=2"])
    assert "--rest_api_num_threads is accepted for compatibility but has no effect" in caplog.text
    assert "--grpc_max_threads" in caplog.text
    assert "rest_api_num_threads" in UNUSED_FLAGS and "port" not in UNUSED_FLAGS


def test_help_gives_every_flag_tf_servings_text():
    result = subprocess.run(
        [sys.executable, "-m", "serving", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "Enables model warmup, which triggers lazy initializations" in text
    assert "EXTENSION: refuse (INVALID_ARGUMENT)" in text
    parser = build_arg_parser()
    for action in parser._actions:
        if action.dest != "help":
            assert action.help and len(action.help) > 15, action.dest


def test_thread_counts_follow_server_cc():
    assert thread_counts(ServerFlags(tensorflow_session_parallelism=3)) == (3, 3)
    assert thread_counts(
        ServerFlags(tensorflow_session_parallelism=3, tensorflow_intra_op_parallelism=1)
    ) == (1, 0)


def test_grpc_channel_arguments_are_ints_where_they_parse():
    flags = ServerFlags(grpc_channel_arguments="grpc.max_connection_age_ms=2000,grpc.x=abc, bad")
    assert grpc_channel_arguments(flags) == [
        ("grpc.max_connection_age_ms", 2000),
        ("grpc.x", "abc"),
    ]
