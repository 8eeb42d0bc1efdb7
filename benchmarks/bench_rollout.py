"""Benchmark the rollout loop end to end (issue 18's scenarios, tests/fixtures/rollout.py).

1. Train a parent (the test fixture's mlp, or `--model-dir` to serve a version you have)
   and start the whole loop on free loopback ports: Redis, the embedded model server
   serving from the controller's config, the gateway, Prometheus and `python -m rollout`
   with the test policy (12 s windows, canary 10% -> 50%).
2. Publish a version trained on shuffled labels under load with feedback: how long until
   the controller decides, what clients saw.
3. Users write hollow digits (trainer/styles.py) and label them; `trainer finetune
   --from-version stable` makes a child; the controller rolls it out, killed and
   restarted in its canary: time to promotion, accuracy before and after.

Prints a markdown table.

    python benchmarks/bench_rollout.py [--model-dir model_repository/mnist/3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="a version directory to start from")
    args = parser.parse_args()

    import numpy as np

    from tests.fixtures.repository import FIXTURE_TRAIN_KWARGS, export_version, held_out_mnist
    from tests.fixtures.rollout import (
        finetune_and_roll_out,
        launch_rollout_stack,
        publish_bad_version_under_load,
    )

    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as directory:
        work = Path(directory)
        if args.model_dir is None:
            args.model_dir = export_version(work / "parent")
            parent = f"mlp, {FIXTURE_TRAIN_KWARGS['epochs']} epochs on the offline sample"
        else:
            parent = str(args.model_dir)
        images, labels = held_out_mnist()
        images = images.astype(np.float32) / 255.0
        stack = launch_rollout_stack(work / "stack", args.model_dir)
        try:
            bad = publish_bad_version_under_load(stack, images, labels)
            good = finetune_and_roll_out(stack, kill_in_canary=True)
        finally:
            stack.stop()

    failed = [c for c in bad.decision["verdict"]["checks"] if c["status"] == "fail"]
    evidence = "; ".join(
        f"{c['name']} {c['candidate']:.3f} vs stable {c['stable'] or 0:.3f} ({c['threshold']})"
        for c in failed
    )
    total = len(bad.answers)
    finetune = good.metadata["finetune"]
    served = len(good.answers)
    print(f"\nparent: {parent}; policy: tests/fixtures/rollout.py TEST_POLICY\n")
    print("| scenario | figure | value |")
    print("| --- | --- | --- |")
    rows = [
        ("bad version", "decision", bad.decision["decision"]),
        ("bad version", "seconds from publication to the decision",
         f"{bad.seconds_to_decision:.1f}"),
        ("bad version", "failed checks (evidence)", evidence),
        ("bad version", "client errors", f"{bad.errors} of {total}"),
        ("bad version", "answers from the bad version",
         f"{bad.answers_from_bad} of {total} ({bad.answers_from_bad / total:.1%})"),
        ("fine-tune", "parent -> child on 400 unseen hollow digits",
         f"{good.parent_accuracy:.3f} -> {good.child_accuracy:.3f}"),
        ("fine-tune", "trainer finetune wall time (s)", f"{good.finetune_seconds:.1f}"),
        ("fine-tune", "records trained on / held out",
         f"{finetune['records']} / {finetune['holdout_records']}"),
        ("fine-tune", "decision", good.decision["decision"]),
        ("fine-tune", "seconds from publication to promotion",
         f"{good.seconds_to_decision:.1f} (windows: shadow 12 s, canary 2 x 12 s)"),
        ("fine-tune", "online accuracy (recording rule) parent -> child",
         f"{good.online_accuracy[good.parent]:.3f} -> {good.online_accuracy[good.child]:.3f}"),
        ("fine-tune", "client errors during the rollout",
         f"{sum(1 for s, _ in good.answers if s != 200)} of {served}"),
        ("restart", "stage when killed -> first decision after restart",
         f"{good.before_kill['stage']} step {good.before_kill['step'] + 1} -> "
         f"{good.after_restart[0]['decision']} ({good.after_restart[0]['stage']} step "
         f"{good.after_restart[0]['step'] + 1})"),
    ]  # fmt: skip
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
