"""The control loop: each model's candidate through shadow and canary to stable.

One pass (`tick`) per interval, under a lock the CLI shares:

1. read the config and the state it carries (model_config.py);
2. per model: expire draining versions, notice new exports, and move the candidate one
   step: `seen` (wait until the model server has it AVAILABLE) -> `shadow` -> `canary`
   at each step's share -> promoted to `stable`; or rolled back;
3. write the config (and ask the server to reload it) if it changed, then publish every
   model's rollout record.

Safety, in the order the actions happen:
- a version is loaded and AVAILABLE before a record sends it traffic, and labelled
  `canary` only then (TF Serving refuses a label on a version it has not loaded);
- a rollback publishes the record that takes the candidate's traffic away first, before
  anything else can fail, and the version stays loaded (draining) for the time gateways
  may still route to it; a promotion keeps the old stable loaded the same way;
- no evidence, no decision: a stage waits while Prometheus, the model server or Redis
  cannot answer, and a restarted controller resumes the stage it was in (the state is in
  the config) with its analysis still ahead of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rollout.analysis import Verdict, collect_evidence, judge
from rollout.audit import AuditLog
from rollout.config import Settings
from rollout.errors import (
    EvidenceUnavailableError,
    ModelConfigError,
    ServingUnavailableError,
    UnknownModelError,
    UnsafeActionError,
)
from rollout.metrics import RolloutMetrics
from rollout.model_config import (
    ModelConfigStore,
    ModelState,
    apply_state,
    labels_of,
    parse_config,
    render_config,
    specific_versions,
)
from rollout.policy import Policy
from rollout.protos import load_messages
from rollout.queries import Prometheus, RecordingRules
from rollout.record import RecordStore, RecordStoreUnavailableError, RolloutRecord
from rollout.serving_client import ServingClient

log = logging.getLogger("rollout")


def list_versions(model_dir: Path) -> list[int]:
    """Published versions under `model_dir` (numeric directories; a non-numeric one is an
    export still in progress, as TF Serving's file-system poller sees it)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


class Controller:
    """Drives every model that has a policy; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        policies: dict[str, Policy],
        store: ModelConfigStore,
        serving: ServingClient,
        records: RecordStore | None,
        prometheus: Prometheus,
        rules: RecordingRules,
        audit: AuditLog,
        metrics: RolloutMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.policies = policies
        self.store = store
        self.serving = serving
        self.records = records
        self.prometheus = prometheus
        self.rules = rules
        self.audit = audit
        self.metrics = metrics or RolloutMetrics()
        self.clock = clock
        # The reason of the last "wait" per model: a wait is audited when it changes,
        # not every interval.
        self._last_wait: dict[str, str] = {}
        self._config_seen = False
        # States decided by a pass whose config write failed (see tick).
        self._unsaved: dict[str, ModelState] | None = None

    # -- the loop ------------------------------------------------------------------------

    def tick(self) -> None:
        """One pass over every model (see the module docstring)."""
        with self.action_lock():
            config, states, text = self._read()
            if self._unsaved is not None:
                # The last pass decided but could not write its config: its states win
                # over the stored ones (a rollback must not be undone by a failed write).
                states.update(self._unsaved)
            for model, policy in self.policies.items():
                state = states.setdefault(model, ModelState(model))
                self._honour_rollbacks(state)
                try:
                    self._advance(state, policy)
                except (EvidenceUnavailableError, ServingUnavailableError) as error:
                    reason = (
                        "prometheus" if isinstance(error, EvidenceUnavailableError) else "serving"
                    )
                    self.metrics.tick_errors.labels(model, reason).inc()
                    self._wait(state, f"{reason} unavailable: {error}")
            try:
                self._write(config, states, text)
            except ModelConfigError:
                self._unsaved = {m: s for m, s in states.items() if m in self.policies}
                self.metrics.tick_errors.labels("", "config").inc()
                raise
            finally:
                self._publish(states)
            self._unsaved = None
        self.metrics.last_tick.set(self.clock())

    def forget_unsaved(self) -> None:
        """Drop the states of a pass whose config write failed (leadership was lost: the
        stored config, written by the new leader, is the truth now)."""
        self._unsaved = None

    def bootstrap(self) -> str:
        """Create the config if it does not exist (`rollout init-config`, before the model
        server starts): each model serves its newest version as stable. Returns the text."""
        with self.action_lock():
            config, states, text = self._read()
            for model in self.policies:
                state = states.setdefault(model, ModelState(model))
                self._expire_and_bootstrap(state)
            return self._write(config, states, text, reload=False)

    # -- manual actions (the CLI), under the same lock and rules -------------------------

    def promote(self, model: str, version: int) -> dict:
        """Make the candidate `version` stable now, skipping its remaining stages."""

        def act(state: ModelState) -> dict:
            status = self.serving.version_states(model).get(version)
            if status is None or status.state != "AVAILABLE":
                raise UnsafeActionError(
                    f"{model} version {version} is not AVAILABLE on the model server "
                    f"({status.state if status else 'unknown'}): it cannot take all traffic"
                )
            return self._promote(state, {"manual": True})

        return self._act_on_candidate(model, version, act)

    def rollback(self, model: str, version: int) -> dict:
        """Take the candidate `version` out now. Never waits on evidence or on the model
        server: the record goes first, and a failing config write leaves it out anyway."""
        return self._act_on_candidate(
            model,
            version,
            lambda state: self._rollback(state, "rolled back by hand", None, {"manual": True}),
        )

    def pause(self, model: str, version: int, paused: bool = True) -> dict:
        """Freeze (or resume) the candidate where it is: shares stay, nothing advances."""

        def act(state: ModelState) -> dict:
            state.paused = paused
            if not paused:
                # The window restarts: evidence from the pause does not count towards it.
                state.stage_started = self.clock()
            return self._decide(state, "pause" if paused else "resume", "by hand", manual=True)

        return self._act_on_candidate(model, version, act)

    def _act_on_candidate(
        self, model: str, version: int, act: Callable[[ModelState], dict]
    ) -> dict:
        """Under the lock: refuse unless `version` is the candidate in progress, `act` on
        its state, write the config and publish the record, as a pass would."""
        with self.action_lock():
            config, states, text = self._read()
            state = self._state_of(states, model)
            self._honour_rollbacks(state)
            if state.candidate != version:
                raise UnsafeActionError(
                    f"{model} version {version} is not the candidate in progress (candidate: "
                    f"{state.candidate}, stable: {state.stable}); only a candidate is promoted, "
                    "rolled back or paused by hand: to replace stable, publish a new version"
                )
            entry = act(state)
            self._write(config, states, text)
            self._publish(states)
            return entry

    def states(self) -> dict[str, ModelState]:
        """Each managed model's state as the config records it."""
        _config, states, _text = self._read(acting=False)
        return {model: states.get(model, ModelState(model)) for model in self.policies}

    @contextlib.contextmanager
    def action_lock(self) -> Iterator[None]:
        """One actor at a time on this machine: the loop's pass or a CLI action. (Across
        pods, leader election keeps a single controller; the ConfigMap store refuses a
        write based on a stale read.)"""
        path = self._lock_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- one model -----------------------------------------------------------------------

    def _advance(self, state: ModelState, policy: Policy) -> None:
        self._expire_and_bootstrap(state)
        if state.stable is None:
            return
        self._notice_new_version(state)
        if state.candidate is None or state.paused:
            return
        if state.stage == "seen":
            self._wait_until_loaded(state, policy)
        elif state.stage in ("shadow", "canary"):
            self._analyse(state, policy)

    def _expire_and_bootstrap(self, state: ModelState) -> None:
        now = self.clock()
        state.draining = {v: until for v, until in state.draining.items() if until > now}
        if state.stable is not None:
            return
        versions = [v for v in self._versions(state.model) if v not in state.rolled_back]
        if versions:
            state.stable, state.stage = versions[-1], "stable"
            self._decide(state, "bootstrap", "no stable version yet: the newest one is stable")

    def _notice_new_version(self, state: ModelState) -> None:
        newer = [
            v
            for v in self._versions(state.model)
            if v > (state.stable or 0) and v not in state.rolled_back
        ]
        if not newer or newer[-1] == state.candidate:
            return
        newest = newer[-1]
        if state.candidate is not None:
            if newest < state.candidate:
                return
            # A newer export supersedes the candidate in progress: its analysis would be
            # of a version nobody will promote.
            self._drain(state, state.candidate)
            self._decide(state, "superseded", f"version {newest} supersedes it")
        state.candidate, state.stage, state.step = newest, "seen", 0
        state.stage_started, state.paused = self.clock(), False
        self._decide(state, "seen", "new version in the model repository")

    def _wait_until_loaded(self, state: ModelState, policy: Policy) -> None:
        status = self.serving.version_states(state.model).get(state.candidate)
        if status is not None and status.error:
            self._rollback(state, f"the model server could not load it: {status.error}", None)
            return
        if status is None or status.state != "AVAILABLE":
            self._wait(state, f"loading ({status.state if status else 'not yet seen'})")
            return
        if self.records is None:
            self._wait(
                state,
                "no Redis (ROLLOUT_REDIS_URL): traffic shares cannot reach the gateways; "
                "promote or roll back by hand",
            )
            return
        stage = "shadow" if policy.shadow.enabled else "canary"
        self._enter(state, stage, 0, policy)

    def _analyse(self, state: ModelState, policy: Policy) -> None:
        evidence = collect_evidence(
            self.prometheus, self.rules, policy, state.stage, state.candidate, state.stable
        )
        verdict = judge(evidence, policy, state.stage, self.clock() - state.stage_started)
        details = {"verdict": verdict.as_dict(), "evidence": dataclasses.asdict(evidence)}
        if verdict.decision == "rollback":
            self._rollback(state, verdict.reason, verdict, details)
        elif verdict.decision == "wait":
            self._wait(state, verdict.reason, verdict)
        elif state.stage == "shadow":
            self._enter(state, "canary", 0, policy, details)
        elif state.step + 1 < len(policy.canary.steps):
            self._enter(state, "canary", state.step + 1, policy, details)
        else:
            self._promote(state, details)

    # -- transitions ---------------------------------------------------------------------

    def _enter(self, state: ModelState, stage: str, step: int, policy: Policy, details=None):
        state.stage, state.step, state.stage_started = stage, step, self.clock()
        share = (
            f"{policy.shadow.percent:g}% shadow copies"
            if stage == "shadow"
            else f"{policy.canary.steps[step]:g}% of traffic"
        )
        self._decide(state, stage, f"entering {stage} step {step + 1}: {share}", **(details or {}))

    def _promote(self, state: ModelState, details: dict[str, Any]) -> dict:
        previous = state.stable
        if previous is not None:
            self._drain(state, previous)
        state.stable, state.candidate = state.candidate, None
        state.stage, state.step, state.stage_started = "stable", 0, self.clock()
        return self._decide(
            state,
            "promote",
            f"version {state.stable} replaces {previous}",
            **details,
            version=state.stable,
        )

    def _rollback(
        self, state: ModelState, reason: str, verdict: Verdict | None, details=None
    ) -> dict:
        version = state.candidate
        state.candidate, state.stage, state.step = None, "stable", 0
        state.stage_started = self.clock()
        if version is not None:
            state.rolled_back.append(version)
            self._drain(state, version)
            # Marked in Redis too: if the config write below fails, the next pass (or a
            # controller that only ever sees the old config) still honours the rollback.
            if self.records is not None:
                try:
                    self.records.mark_rolled_back(state.model, version)
                except RecordStoreUnavailableError as error:
                    log.warning("%s: %s", state.model, error)
        # The record first: nothing after this line can keep traffic on the version.
        self._publish({state.model: state})
        extra = dict(details or {})
        if verdict is not None and "verdict" not in extra:
            extra["verdict"] = verdict.as_dict()
        return self._decide(state, "rollback", reason, version=version, **extra)

    def _drain(self, state: ModelState, version: int) -> None:
        state.draining[str(version)] = self.clock() + self.settings.quiet_period_seconds

    def _wait(self, state: ModelState, reason: str, verdict: Verdict | None = None) -> None:
        summary = {"time": self.clock(), "decision": "wait", "reason": reason}
        if verdict is not None:
            summary["checks"] = [_check_summary(check) for check in verdict.as_dict()["checks"]]
        state.last_decision = summary
        # "checks pass; the window ends in 9s" is one wait, whatever the seconds say.
        gist = reason.split(";")[0]
        if self._last_wait.get(state.model) != gist:
            self._last_wait[state.model] = gist
            self._decide(
                state,
                "wait",
                reason,
                keep_last=True,
                **({"verdict": verdict.as_dict()} if verdict else {}),
            )

    def _decide(self, state: ModelState, decision: str, reason: str, **details) -> dict:
        keep_last = details.pop("keep_last", False)
        version = details.pop("version", state.candidate or state.stable)
        entry = self.audit.record(
            state.model,
            version,
            decision,
            reason=reason,
            stage=state.stage,
            step=state.step,
            stable=state.stable,
            candidate=state.candidate,
            **details,
        )
        self.metrics.decisions.labels(state.model, decision).inc()
        if decision != "wait":
            self._last_wait.pop(state.model, None)
        if not keep_last:
            summary = {"time": entry["time"], "decision": decision, "reason": reason}
            if "verdict" in details:
                summary["checks"] = [_check_summary(c) for c in details["verdict"]["checks"]]
            state.last_decision = summary
        log.info("%s v%s: %s (%s)", state.model, version, decision, reason)
        return entry

    # -- the outside world ---------------------------------------------------------------

    def _read(self, acting: bool = True) -> tuple[Any, dict[str, ModelState], str | None]:
        """The config, the state it carries, and its text. `acting`: a pass or an action
        will write what it decides, so adopting a model is audited (`status` only reads)."""
        text = self.store.read_text()
        if text is None:
            if self._config_seen:
                # Starting over would make the newest export stable, rolled-back ones
                # included: refuse, and let a person restore or re-seed it.
                raise ModelConfigError(
                    "the model config disappeared while the controller ran; it does not "
                    "start over on its own: restore it, or restart the controller to re-seed"
                )
            return load_messages().ModelServerConfig(), {}, None
        self._config_seen = True
        config, states = parse_config(text)
        for model in self.policies:
            if model not in states:
                states[model] = self._adopt(config, model, acting)
        return config, states, text

    def _honour_rollbacks(self, state: ModelState) -> None:
        """A rollback recorded in Redis whose config write failed (the loop's, or a
        person's from the CLI) is applied to the state read from the config."""
        if self.records is None or state.candidate is None:
            return
        try:
            marked = self.records.rolled_back(state.model)
        except RecordStoreUnavailableError:
            return
        if state.candidate in marked:
            self._rollback(state, "rolled back earlier; its config write had not landed", None)

    def _adopt(self, config: Any, model: str, audit: bool) -> ModelState:
        """The state of a model the config serves but the controller has not managed yet
        (the shipped seed, or a hand-written config): its `stable` label, else the newest
        version its policy names, stays stable."""
        state = ModelState(model)
        stable = labels_of(config, model).get("stable")
        if stable is None:
            stable = max(specific_versions(config, model), default=None)
        if stable is not None and stable in self._versions(model):
            state.stable = stable
            if audit:
                self._decide(state, "bootstrap", "adopted from the config: its stable version")
        return state

    def _write(self, config, states: dict[str, ModelState], text: str | None, reload=True) -> str:
        for model, state in states.items():
            if model in self.policies and state.stable is not None:
                apply_state(config, state, self.settings.base_path(model))
        new_text = render_config(config, states)
        if new_text != text:
            self.store.write_text(new_text)
            if reload and self.settings.reload_config:
                try:
                    self.serving.reload(config)
                except ServingUnavailableError as error:
                    # The server's config poll picks the file up; the stage waits for it.
                    log.warning("reload not applied at once: %s", error)
        for model, state in states.items():
            self._export_metrics(model, state)
        return new_text

    def _publish(self, states: dict[str, ModelState]) -> None:
        if self.records is None:
            return
        for model, state in states.items():
            if model not in self.policies:
                continue
            record = self.record_of(state)
            try:
                self.records.publish(record)
            except RecordStoreUnavailableError as error:
                self.metrics.tick_errors.labels(model, "redis").inc()
                log.warning("%s: %s", model, error)

    def record_of(self, state: ModelState) -> RolloutRecord:
        """The record the gateways get for `state`: its shares follow its stage."""
        policy = self.policies[state.model]
        canary = shadow = 0.0
        candidate = state.candidate if state.stage in ("shadow", "canary") else None
        if candidate is not None and state.stage == "canary":
            canary = policy.canary.steps[min(state.step, len(policy.canary.steps) - 1)]
        if candidate is not None and state.stage == "shadow":
            shadow = policy.shadow.percent
        stage = "paused" if state.paused else state.stage
        return RolloutRecord(state.model, state.stable, candidate, stage, canary, shadow)

    def _export_metrics(self, model: str, state: ModelState) -> None:
        if model not in self.policies:
            return
        if state.stable is not None:
            self.metrics.set_stage(model, state.stable, "stable")
        for version in state.rolled_back:
            self.metrics.set_stage(model, version, "rolled_back")
        record = self.record_of(state)
        if state.candidate is not None:
            stage = "paused" if state.paused else state.stage
            self.metrics.set_stage(model, state.candidate, stage)
            self.metrics.traffic.labels(model, str(state.candidate), "canary").set(
                record.canary_percent
            )
            self.metrics.traffic.labels(model, str(state.candidate), "shadow").set(
                record.shadow_percent
            )

    def _versions(self, model: str) -> list[int]:
        return list_versions(self.settings.model_repository / model)

    def _state_of(self, states: dict[str, ModelState], model: str) -> ModelState:
        if model not in self.policies:
            raise UnknownModelError(
                f"no policy for model {model!r} in {self.settings.policies_dir}"
            )
        return states.setdefault(model, ModelState(model))

    def _lock_path(self) -> Path:
        if self.settings.config_store == "file":
            path = self.settings.config_path
            return path.with_name(f".{path.name}.lock")
        return Path("/tmp/rollout-controller.lock")


def _check_summary(check: dict[str, Any]) -> dict[str, Any]:
    """A check as `rollout status` shows it: its numbers, without the prose reason."""
    return {key: value for key, value in check.items() if key != "reason"}


def require_config(store: ModelConfigStore) -> None:
    """ModelConfigError when the config does not exist (CLI actions need a running loop)."""
    if store.read_text() is None:
        raise ModelConfigError(
            "no model config yet: start the controller (or `rollout init-config`)"
        )
