"""The controller's domain exceptions. It serves no requests, so each documents what the
controller does about it, and the CLI's exit status where one reaches a person."""

from __future__ import annotations


class RolloutError(Exception):
    """Base class. CLI exit status 1."""

    exit_code = 1


class PolicyError(RolloutError):
    """A policy file is missing, unreadable or invalid: the controller refuses to start
    (exit 2) and names the file and the field."""

    exit_code = 2


class ModelConfigError(RolloutError):
    """The model config cannot be read, parsed or written (exit 3). The controller keeps
    its state and retries on the next tick; it never writes a config it could not parse."""

    exit_code = 3


class EvidenceUnavailableError(RolloutError):
    """Prometheus did not answer, or answered with an error: the analysis waits, it never
    decides on missing evidence (exit 4 from the CLI)."""

    exit_code = 4


class ServingUnavailableError(RolloutError):
    """The model server did not answer a status or reload call: the stage waits."""

    exit_code = 5


class UnsafeActionError(RolloutError):
    """A person asked for an action the safety rules refuse (for example promoting a
    version that is not loaded, or rolling back the only stable version): exit 6, nothing
    changed."""

    exit_code = 6


class UnknownModelError(RolloutError):
    """The CLI named a model or version the controller does not manage (exit 7)."""

    exit_code = 7
