"""Issue 18 end to end, real processes throughout (tests/fixtures/rollout.py): the rollout
controller, the embedded model server serving from the controller's config, the gateway
following the Redis record, Prometheus evaluating the project's rules, and the trainer.

1. A version trained on shuffled labels is published past a bypassed gate while load and
   feedback run: the controller shadows it, sees its accuracy collapse and rolls it back;
   clients see no error and (almost) no answer from it.
2. Users write digits in a style the served model reads poorly; their feedback labels
   them; `trainer finetune` builds a version that reads them; the controller walks it
   through shadow and canary to stable, and online accuracy rises.
3. In the middle of that rollout the controller is killed; restarted, it resumes the
   stage it was in, with its window and analysis still ahead of it.

The two tests share one stack (module scope) and each starts from whatever stable
version it finds, so either may run first.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rollout.model_config import labels_of, parse_config
from tests.fixtures.rollout import (
    MODEL,
    RolloutStack,
    finetune_and_roll_out,
    launch_rollout_stack,
    publish_bad_version_under_load,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(
    trained_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RolloutStack]:
    running = launch_rollout_stack(
        tmp_path_factory.mktemp("rollout-e2e"), trained_repository / MODEL / "1"
    )
    yield running
    running.stop()


def test_a_bad_version_is_rolled_back_with_no_harm_to_clients(stack, mnist_test_images) -> None:
    images, labels = mnist_test_images
    outcome = publish_bad_version_under_load(stack, images.astype(np.float32) / 255.0, labels)

    assert outcome.decision["decision"] == "rollback", outcome.decision["reason"]
    assert outcome.errors == 0, sorted({s for s, _ in outcome.answers if s != 200})
    assert outcome.answers_from_bad < 0.05 * len(outcome.answers), (
        f"{outcome.answers_from_bad} of {len(outcome.answers)} answers from v{outcome.bad}"
    )
    # The audit shows the evidence: the check that failed, its value and its threshold.
    failed = [c for c in outcome.decision["verdict"]["checks"] if c["status"] == "fail"]
    assert failed, outcome.decision
    assert all(c["candidate"] is not None and c["threshold"] for c in failed)
    assert any(c["name"] in ("online_accuracy", "shadow_agreement") for c in failed), failed
    assert outcome.decision["evidence"]["queries"], "the audit keeps the PromQL it decided on"
    state = stack.state()
    assert state["stable"] == outcome.stable and outcome.bad in state["rolled_back"]
    config, _ = parse_config((stack.run_dir / "models.config").read_text())
    assert labels_of(config, MODEL) == {"stable": outcome.stable}


def test_a_finetuned_version_is_promoted_and_a_killed_controller_resumes(stack) -> None:
    outcome = finetune_and_roll_out(stack, kill_in_canary=True)
    assert outcome.metadata["parent_version"] == outcome.parent

    # 3. The restarted controller resumed the canary: no stage started over, and the
    # stage's window was not restarted either.
    before, after = outcome.before_kill, outcome.after_restart
    assert before["stage"] == "canary"
    assert after, "the restarted controller decided nothing about the candidate"
    assert after[0]["decision"] in ("wait", "canary", "promote"), after[0]
    assert (after[0]["stage"], after[0]["step"]) >= (before["stage"], before["step"])
    assert not [e for e in after if e["decision"] in ("seen", "shadow")], "restarted from zero"
    resumed = outcome.resumed
    if (resumed["stage"], resumed["step"]) == (before["stage"], before["step"]):
        assert resumed["stage_started"] == before["stage_started"], "the window restarted"

    # 2. Promoted through every stage, and better where its parent was poor.
    assert outcome.decision["decision"] == "promote", outcome.decision["reason"]
    assert outcome.decisions.count("canary") == 2 and "shadow" in outcome.decisions
    assert stack.state()["stable"] == outcome.child
    assert outcome.child_accuracy > outcome.parent_accuracy + 0.1
    # Online accuracy, as the dashboard's recording rule has it, rose with the new version.
    online = outcome.online_accuracy
    assert online[outcome.child] > online[outcome.parent], online
    assert sum(1 for status, _ in outcome.answers if status != 200) == 0
