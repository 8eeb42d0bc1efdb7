"""Reference statistics: what held-out data looks like to the model, stored with the version.

At export the trainer bins, on held-out data (the validation split: never trained on):
- `class`: the predicted class (10 bins);
- `confidence`: the top-class probability;
- input statistics that matter for uploads, on the 28x28 input in [0, 1] with ink =
  pixels above 0.5: `ink_fraction`, `mean_intensity`, `bbox_size` (ink bounding-box
  area / 784, 0 without ink), `bbox_center_x`, `bbox_center_y` (pixels, -1 without ink).

Continuous statistics get decile bins (equal shares of the held-out data, the usual
choice for the population stability index); the first and last bins are open-ended, so
any live value falls in one.

They travel inside the SavedModel as a no-input signature, `reference_stats`, whose
outputs are `<statistic>_cuts` (float32 [bins - 1]) and `<statistic>_proportions`
(float32 [bins]), plus `samples`. TF Serving serves it like any signature, so the gateway
(which mounts no model repository) asks the model server for it; the copy in
`assets.extra/reference_stats.json` is for people. The gateway computes the same
statistics on live inputs (gateway/drift.py); tests/gateway/test_drift.py checks that the
two definitions agree on the same images.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.data import NUM_CLASSES

SIGNATURE_NAME = "reference_stats"
INK_THRESHOLD = 0.5
DECILES = np.linspace(0.1, 0.9, 9)


def input_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image input statistics of float [N, 28, 28] images in [0, 1]."""
    ink = images > INK_THRESHOLD
    count, height, width = images.shape
    sizes = np.zeros(count)
    centre_x = np.full(count, -1.0)
    centre_y = np.full(count, -1.0)
    for index in range(count):
        ys, xs = np.nonzero(ink[index])
        if len(ys) == 0:
            continue
        box_h = ys.max() - ys.min() + 1
        box_w = xs.max() - xs.min() + 1
        sizes[index] = box_h * box_w / (height * width)
        centre_x[index] = (xs.min() + xs.max()) / 2.0
        centre_y[index] = (ys.min() + ys.max()) / 2.0
    return {
        "ink_fraction": ink.reshape(count, -1).mean(axis=1),
        "mean_intensity": images.reshape(count, -1).mean(axis=1, dtype=np.float64),
        "bbox_size": sizes,
        "bbox_center_x": centre_x,
        "bbox_center_y": centre_y,
    }


def _bin(values: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Shares of `values` per bin; cuts are compared as float32, as the gateway gets them."""
    cuts = cuts.astype(np.float32).astype(np.float64)
    counts = np.bincount(np.searchsorted(cuts, values, side="right"), minlength=len(cuts) + 1)
    return counts / max(len(values), 1)


def compute_reference(images: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """{statistic: {"cuts": [...], "proportions": [...]}, "samples": N} of held-out data.

    `images`: float [N, 28, 28] in [0, 1], what the model was given; `probabilities`:
    the model's [N, 10] answers.
    """
    values = {
        "class": probabilities.argmax(axis=1).astype(np.float64),
        "confidence": probabilities.max(axis=1).astype(np.float64),
        **input_statistics(images),
    }
    reference: dict[str, Any] = {"samples": len(images)}
    for statistic, column in values.items():
        if statistic == "class":
            cuts = np.arange(NUM_CLASSES - 1) + 0.5
        else:
            cuts = np.unique(np.quantile(column, DECILES).astype(np.float32)).astype(np.float64)
        reference[statistic] = {
            "cuts": cuts.tolist(),
            "proportions": _bin(column, cuts).tolist(),
        }
    return reference


def signature_outputs(reference: dict[str, Any]) -> dict[str, np.ndarray]:
    """The `reference_stats` signature's outputs, as float32 arrays."""
    outputs = {"samples": np.array(reference["samples"], dtype=np.float32)}
    for statistic, bins in reference.items():
        if statistic == "samples":
            continue
        outputs[f"{statistic}_cuts"] = np.array(bins["cuts"], dtype=np.float32)
        outputs[f"{statistic}_proportions"] = np.array(bins["proportions"], dtype=np.float32)
    return outputs
