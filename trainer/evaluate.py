"""Test-set metrics and the run's plots (confusion matrix, learning curves)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trainer.data import NUM_CLASSES, scale_pixels

if TYPE_CHECKING:
    import keras


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Counts [true class, predicted class]."""
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def evaluate_model(model: keras.Model, x_test: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
    """Return accuracy, loss, per-class precision/recall and the confusion matrix."""
    probabilities = model.predict(scale_pixels(x_test), verbose=0, batch_size=256)
    predicted = probabilities.argmax(axis=1)
    picked = probabilities[np.arange(len(y_test)), y_test]
    loss = float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
    matrix = confusion_matrix(y_test, predicted)
    true_positives = np.diag(matrix).astype(float)
    predicted_counts = matrix.sum(axis=0)
    actual_counts = matrix.sum(axis=1)
    precision = np.divide(
        true_positives, predicted_counts, out=np.zeros(NUM_CLASSES), where=predicted_counts > 0
    )
    recall = np.divide(
        true_positives, actual_counts, out=np.zeros(NUM_CLASSES), where=actual_counts > 0
    )
    return {
        "accuracy": float(true_positives.sum() / len(y_test)),
        "loss": loss,
        "test_samples": len(y_test),
        "per_class": {
            str(c): {
                "precision": round(float(precision[c]), 4),
                "recall": round(float(recall[c]), 4),
            }
            for c in range(NUM_CLASSES)
        },
        "confusion_matrix": matrix.tolist(),
    }


def evaluate_uploads(model: keras.Model) -> dict[str, Any]:
    """Accuracy on the upload-like set (trainer.upload_eval): printed and handwriting."""
    from trainer.upload_eval import score_upload_set

    return score_upload_set(lambda images: model.predict(images, verbose=0, batch_size=256))


def save_confusion_matrix_png(matrix: np.ndarray | list, path: Path, title: str) -> Path:
    """Draw the confusion matrix with counts in every cell."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    matrix = np.asarray(matrix)
    figure = Figure(figsize=(6.5, 5.5))
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    axes.set(
        xticks=range(NUM_CLASSES),
        yticks=range(NUM_CLASSES),
        xlabel="predicted",
        ylabel="true",
        title=title,
    )
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        axes.text(
            col,
            row,
            str(count),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if count > threshold else "black",
        )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def save_learning_curves_png(history: dict[str, list[float]], path: Path, title: str) -> Path:
    """Plot training and validation loss and accuracy per epoch."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if key in history:
                epochs = range(1, len(history[key]) + 1)
                axes.plot(epochs, history[key], marker="o", markersize=3, label=label)
        axes.set(xlabel="epoch", ylabel=metric, title=f"{title}: {metric}")
        axes.legend()
        axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
