"""The control loop with in-process fakes of the model server, Redis and Prometheus: every
stage, the safety order of its actions, restarts and the manual actions. (The real
processes run in tests/e2e/test_rollout.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from rollout.audit import AuditLog
from rollout.config import DEFAULT_RULES_DIR, Settings
from rollout.controller import Controller
from rollout.errors import EvidenceUnavailableError, ModelConfigError, UnsafeActionError
from rollout.model_config import FileModelConfigStore, parse_config
from rollout.policy import Policy
from rollout.queries import RecordingRules, Sample
from rollout.serving_client import VersionStatus

RULES = RecordingRules(DEFAULT_RULES_DIR)
POLICY = Policy.model_validate(
    {
        "model": "mnist",
        "shadow": {"window": "20s", "min_requests": 100},
        "canary": {"steps": [10, 50], "window": "20s", "min_requests": 50},
        "checks": {"accuracy": {"min_feedback": 20}, "drift": {"enabled": False}},
    }
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeServing:
    """ModelService: versions become AVAILABLE when the test says so."""

    def __init__(self) -> None:
        self.available: set[int] = set()
        self.failed: dict[int, str] = {}
        self.reloads: list = []
        self.events: list[str] = []

    def version_states(self, model: str) -> dict[int, VersionStatus]:
        states = {v: VersionStatus(v, "AVAILABLE", "") for v in self.available}
        states.update({v: VersionStatus(v, "END", error) for v, error in self.failed.items()})
        return states

    def reload(self, config) -> None:
        self.reloads.append(config)
        self.events.append("config")


class FakeRecords:
    def __init__(self, events: list[str]) -> None:
        self.records: dict[str, object] = {}
        self.marked: dict[str, set[int]] = {}
        self.events = events

    def mark_rolled_back(self, model: str, version: int) -> None:
        self.marked.setdefault(model, set()).add(version)

    def rolled_back(self, model: str) -> set[int]:
        return self.marked.get(model, set())

    def publish(self, record) -> None:
        if self.records.get(record.model) != record:
            self.events.append(f"record candidate={record.candidate}")
        self.records[record.model] = record


class FakePrometheus:
    """Answers each re-windowed recording rule with per-version values the test sets."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, float]] = {}
        self.down = False
        self._by_query = {
            RULES.windowed(name, window): name for name in RULES.expressions for window in ("20s",)
        }

    def set(self, record: str, **by_version: float) -> None:
        self.values[record] = {version.lstrip("v"): value for version, value in by_version.items()}

    def query(self, expression: str) -> list[Sample]:
        if self.down:
            raise EvidenceUnavailableError("Prometheus did not answer")
        record = self._by_query[expression]
        return [
            Sample({"model": "mnist", "version": version}, value)
            for version, value in self.values.get(record, {}).items()
        ]


def evidence(
    prometheus: FakePrometheus,
    candidate: int,
    stable: int,
    *,
    accuracy: float,
    shadow_agreement: float = 0.97,
) -> None:
    """A busy window: candidate and stable both answer and get feedback."""
    c, s = f"v{candidate}", f"v{stable}"
    for prefix in ("gateway_upstream", "gateway_shadow"):
        requests = f"model_version:{prefix}_requests:rate5m"
        prometheus.set(requests, **{c: 20.0, s: 40.0})
    prometheus.set("model_version:gateway_upstream_errors:ratio_rate5m", **{c: 0.0, s: 0.0})
    prometheus.set("model_version:gateway_shadow_errors:ratio_rate5m", **{c: 0.0})
    p99 = {c: 0.010, s: 0.010}
    prometheus.set("model_version:gateway_upstream_duration_seconds:p99_rate5m", **p99)
    prometheus.set("model_version:gateway_shadow_duration_seconds:p99_rate5m", **{c: 0.01})
    prometheus.set("model_version:gateway_online_accuracy:ratio_rate5m", **{c: accuracy, s: 0.9})
    prometheus.set("model_version:gateway_shadow_online_accuracy:ratio_rate5m", **{c: accuracy})
    prometheus.set("model_version:gateway_feedback:rate5m", **{c: 5.0, s: 5.0})
    prometheus.set("model_version:gateway_shadow_feedback:rate5m", **{c: 5.0})
    prometheus.set("model_version:gateway_shadow_agreement:ratio_rate5m", **{c: shadow_agreement})


@pytest.fixture
def world(tmp_path: Path):
    repository = tmp_path / "models"
    settings = Settings(
        config_path=tmp_path / "run" / "models.config",
        model_repository=repository,
        audit_log=str(tmp_path / "run" / "audit.jsonl"),
        record_propagation_seconds=2,
        gateway_request_timeout_seconds=5,
    )
    clock, serving, prometheus = FakeClock(), FakeServing(), FakePrometheus()
    records = FakeRecords(serving.events)

    def controller() -> Controller:
        return Controller(
            settings,
            {"mnist": POLICY},
            FileModelConfigStore(settings.config_path),
            serving,
            records,
            prometheus,
            RULES,
            AuditLog(settings.audit_log),
            clock=clock,
        )

    def publish(version: int) -> None:
        (repository / "mnist" / str(version)).mkdir(parents=True)

    class World:
        pass

    w = World()
    w.settings, w.clock, w.serving, w.prometheus, w.records = (
        settings,
        clock,
        serving,
        prometheus,
        records,
    )
    w.controller, w.publish = controller, publish
    w.state = lambda: parse_config(settings.config_path.read_text())[1]["mnist"]
    w.record = lambda: records.records["mnist"]
    return w


def _in_shadow(world) -> Controller:
    """Version 1 stable, version 2 published, loaded and in its shadow stage."""
    world.publish(1)
    world.serving.available.update({1, 2})
    controller = world.controller()
    controller.bootstrap()
    world.publish(2)
    controller.tick()
    assert world.state().stage == "shadow"
    return controller


def test_a_good_candidate_walks_shadow_canary_steps_to_stable(world) -> None:
    world.publish(1)
    controller = world.controller()
    controller.bootstrap()
    assert world.state().stable == 1
    world.serving.available.add(1)

    world.publish(2)
    controller.tick()
    assert (world.state().stage, world.record().candidate) == ("seen", None)
    controller.tick()  # still loading: no traffic, no label
    assert world.state().stage == "seen"

    world.serving.available.add(2)
    controller.tick()
    assert world.state().stage == "shadow"
    assert (world.record().candidate, world.record().shadow_percent) == (2, 100.0)

    evidence(world.prometheus, 2, 1, accuracy=0.95)
    controller.tick()
    assert world.state().stage == "shadow", "the window has not elapsed"
    shares = []
    for _ in range(3):
        world.clock.now += 21
        controller.tick()
        shares.append((world.state().stage, world.record().canary_percent))
    assert shares == [("canary", 10.0), ("canary", 50.0), ("stable", 0.0)]
    state = world.state()
    assert (state.stable, state.candidate) == (2, None)
    # The old stable stays loaded while gateways may still route to it, then goes.
    assert state.served_versions() == [1, 2]
    world.clock.now += world.settings.quiet_period_seconds + 1
    controller.tick()
    assert world.state().served_versions() == [2]
    decisions = [e["decision"] for e in AuditLog(world.settings.audit_log).entries()]
    assert decisions[:4] == ["bootstrap", "seen", "wait", "shadow"]
    assert decisions[-3:] == ["canary", "canary", "promote"]


def test_a_failing_candidate_loses_its_traffic_before_anything_else_happens(world) -> None:
    controller = _in_shadow(world)
    world.serving.events.clear()

    evidence(world.prometheus, 2, 1, accuracy=0.1)
    controller.tick()
    state = world.state()
    assert (state.stable, state.candidate, state.rolled_back) == (1, None, [2])
    assert world.serving.events[0] == "record candidate=None", world.serving.events
    entry = AuditLog(world.settings.audit_log).entries()[-1]
    assert entry["decision"] == "rollback"
    checks = {c["name"]: c for c in entry["verdict"]["checks"]}
    assert checks["online_accuracy"]["status"] == "fail"
    assert checks["online_accuracy"]["candidate"] == 0.1
    assert (
        "gateway_shadow_feedback_total"
        in entry["evidence"]["queries"]["model_version:gateway_shadow_online_accuracy:ratio_rate5m"]
    )
    # A rolled-back version is never picked up again.
    world.clock.now += 100
    controller.tick()
    assert world.state().candidate is None


def test_a_restarted_controller_resumes_the_stage_and_still_analyses(world) -> None:
    first = _in_shadow(world)
    evidence(world.prometheus, 2, 1, accuracy=0.95)
    world.clock.now += 21
    first.tick()
    assert (world.state().stage, world.state().step) == ("canary", 0)
    started = world.state().stage_started

    world.records.records.clear()  # Redis lost everything too
    restarted = world.controller()
    world.prometheus.down = True
    world.clock.now += 60
    restarted.tick()
    state = world.state()
    assert (state.stage, state.step, state.stage_started) == ("canary", 0, started)
    assert world.record().canary_percent == 10.0, "the record is restored from the config"
    assert state.last_decision["decision"] == "wait"

    world.prometheus.down = False
    restarted.tick()
    assert (world.state().stage, world.state().step) == ("canary", 1)


def test_a_version_the_server_cannot_load_is_rolled_back(world) -> None:
    world.publish(1)
    world.serving.available.add(1)
    controller = world.controller()
    controller.bootstrap()
    world.publish(2)
    controller.tick()
    world.serving.failed[2] = "could not find SavedModel"
    controller.tick()
    assert world.state().rolled_back == [2]


def test_a_newer_export_supersedes_the_candidate(world) -> None:
    controller = _in_shadow(world)
    world.publish(3)
    controller.tick()
    state = world.state()
    assert (state.candidate, state.stage) == (3, "seen")
    assert "2" in state.draining and 2 not in state.rolled_back


def test_manual_actions_keep_the_safety_rules(world) -> None:
    world.publish(1)
    world.serving.available.add(1)
    controller = world.controller()
    controller.bootstrap()
    world.publish(2)
    controller.tick()
    with pytest.raises(UnsafeActionError, match="not AVAILABLE"):
        controller.promote("mnist", 2)
    with pytest.raises(UnsafeActionError, match="not the candidate"):
        controller.rollback("mnist", 1)

    world.serving.available.add(2)
    controller.tick()
    controller.pause("mnist", 2)
    evidence(world.prometheus, 2, 1, accuracy=0.95)
    world.clock.now += 100
    controller.tick()
    assert (world.state().stage, world.record().stage) == ("shadow", "paused")
    controller.promote("mnist", 2)
    assert (world.state().stable, world.record().candidate) == (2, None)
    assert AuditLog(world.settings.audit_log).entries()[-1]["manual"] is True


def test_without_redis_no_stage_sends_traffic(world) -> None:
    world.publish(1)
    world.serving.available.update({1, 2})
    controller = world.controller()
    controller.records = None
    controller.bootstrap()
    world.publish(2)
    for _ in range(3):
        world.clock.now += 30
        controller.tick()
    assert world.state().stage == "seen"
    assert "no Redis" in world.state().last_decision["reason"]


def test_the_seed_configs_stable_label_is_adopted_not_the_newest_export(world) -> None:
    for version in (1, 2, 3):
        world.publish(version)
    world.settings.config_path.parent.mkdir(parents=True)
    world.settings.config_path.write_text(
        'model_config_list { config { name: "mnist" base_path: "/m" model_platform: '
        '"tensorflow" model_version_policy { specific { versions: 2 } } '
        'version_labels { key: "stable" value: 2 } } }'
    )
    controller = world.controller()
    controller.tick()
    state = world.state()
    assert (state.stable, state.candidate) == (2, 3), "3 is a candidate, not stable"


def test_a_config_that_disappears_mid_run_is_not_started_over(world) -> None:
    world.publish(1)
    controller = world.controller()
    controller.bootstrap()
    controller.tick()
    world.settings.config_path.unlink()
    with pytest.raises(ModelConfigError, match="disappeared"):
        controller.tick()


class FailingStore:
    """A config store whose writes fail while `failing` is set (a full disk, an API
    server refusing)."""

    def __init__(self, inner) -> None:
        self.inner, self.failing = inner, False

    def read_text(self):
        return self.inner.read_text()

    def write_text(self, text: str) -> None:
        if self.failing:
            raise ModelConfigError("disk full")
        self.inner.write_text(text)


def test_a_rollback_whose_config_write_fails_is_not_undone(world) -> None:
    controller = _in_shadow(world)
    controller.store = FailingStore(controller.store)
    controller.store.failing = True
    evidence(world.prometheus, 2, 1, accuracy=0.1)
    with pytest.raises(ModelConfigError):
        controller.tick()
    assert world.record().candidate is None, "the record went first"
    assert world.state().candidate == 2, "the config still says shadow"

    with pytest.raises(ModelConfigError):
        controller.tick()  # the write still fails: the record must stay without traffic
    assert world.record().candidate is None
    controller.store.failing = False
    controller.tick()
    assert (world.state().candidate, world.state().rolled_back) == (None, [2])


def test_a_rollback_by_hand_survives_a_failed_write_through_redis(world) -> None:
    loop = _in_shadow(world)
    person = world.controller()
    person.store = FailingStore(person.store)
    person.store.failing = True
    with pytest.raises(ModelConfigError):
        person.rollback("mnist", 2)
    # The loop only sees the old config, but Redis remembers the rollback.
    loop.tick()
    assert (world.state().candidate, world.state().rolled_back) == (None, [2])
    assert world.record().candidate is None


def test_status_reads_the_seed_without_deciding_anything(world) -> None:
    world.publish(1)
    world.settings.config_path.parent.mkdir(parents=True)
    world.settings.config_path.write_text(
        'model_config_list { config { name: "mnist" base_path: "/m" model_platform: '
        '"tensorflow" version_labels { key: "stable" value: 1 } } }'
    )
    assert world.controller().states()["mnist"].stable == 1
    assert AuditLog(world.settings.audit_log).entries() == []
