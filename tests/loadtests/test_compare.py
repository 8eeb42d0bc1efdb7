"""`make load-compare A=... B=...`: two reports side by side, with the ratios B/A."""

from __future__ import annotations

from dataclasses import replace

from loadtests.__main__ import main
from loadtests.report import build_report

from .report_files import GRPC_PREDICT, JSON_PREDICT, write_stats, write_verdict


def write_run(run_dir, kinds):
    write_stats(run_dir, kinds)
    write_verdict(run_dir, passed=True, p95=12, p99=20, requests=900)
    build_report(run_dir)


def test_ratios_compare_each_request_kind(tmp_path, capsys):
    before, after = tmp_path / "before", tmp_path / "after"
    write_run(before, [JSON_PREDICT, GRPC_PREDICT])
    faster = replace(JSON_PREDICT, rps=120.0, p99=10)
    write_run(after, [faster, GRPC_PREDICT])

    assert main(["compare", str(before), str(after)]) == 0

    printed = capsys.readouterr().out
    assert "# after (B) against before (A)" in printed
    assert "| POST /v1/models/mnist/predict [json] | req/s | 60.0 | 120.0 | 2.00x |" in printed
    assert "| POST /v1/models/mnist/predict [json] | p99 ms | 20.0 | 10.0 | 0.50x |" in printed
    assert "| grpc PredictionService/Predict | req/s | 30.0 | 30.0 | 1.00x |" in printed
    assert "Not in both reports" in printed  # neither had PROMETHEUS_URL


def test_a_kind_only_one_run_made_has_no_ratio(tmp_path, capsys):
    write_run(tmp_path / "a", [JSON_PREDICT])
    write_run(tmp_path / "b", [JSON_PREDICT, GRPC_PREDICT])

    main(["compare", str(tmp_path / "a"), str(tmp_path / "b")])

    assert "| grpc PredictionService/Predict | req/s | - | 30.0 | - |" in capsys.readouterr().out


def test_a_directory_without_a_report_is_named(tmp_path, capsys):
    write_run(tmp_path / "a", [JSON_PREDICT])
    (tmp_path / "empty").mkdir()

    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "empty")]) == 2

    assert f"no report.json in {tmp_path / 'empty'}" in capsys.readouterr().err
