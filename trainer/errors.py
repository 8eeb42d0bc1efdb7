"""Domain exceptions of the trainer and the one map from exception to process exit code.

The trainer is a batch job, so its "status" is the exit code a scheduler (make, a
Kubernetes Job, CI) reads.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_QUALITY_GATE = 3


class TrainerError(Exception):
    """Base of the trainer's domain errors: exit code 1."""


class InvalidOptionError(TrainerError):
    """A flag or setting has a value the trainer cannot use: exit code 2 (usage error)."""


class DatasetUnavailableError(TrainerError):
    """The requested MNIST source cannot be read (missing file, bad format, no network): exit 2."""


class QualityGateError(TrainerError):
    """The model failed the quality gate, so nothing was exported: exit code 3."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class ParentModelError(TrainerError):
    """`trainer finetune` cannot start from the named version (absent, or exported before
    assets.extra/model.keras was saved): exit code 1."""


class ExportError(TrainerError):
    """Writing or publishing the SavedModel failed; no version was published: exit code 1."""


_EXIT_CODES: dict[type[Exception], int] = {
    QualityGateError: EXIT_QUALITY_GATE,
    InvalidOptionError: EXIT_USAGE,
    DatasetUnavailableError: EXIT_USAGE,
    ExportError: EXIT_FAILURE,
    TrainerError: EXIT_FAILURE,
}


def exit_code_for(error: Exception) -> int:
    """Map an exception to the trainer's exit code (most specific class wins)."""
    for cls in type(error).__mro__:
        if cls in _EXIT_CODES:
            return _EXIT_CODES[cls]
    return EXIT_FAILURE
