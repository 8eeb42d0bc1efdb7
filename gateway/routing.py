"""Which model version a request goes to: pinned, or split between stable and canary.

The split comes from the model's rollout record when there is one (gateway/rollout_record.py,
docs/ROLLOUT.md): versions by number. Without one, from the environment settings:
GATEWAY_CANARY_PERCENT to the canary label, the rest to the default label.
"""

from __future__ import annotations

import random
from typing import Protocol

from gateway.errors import InvalidInputError
from gateway.rollout_record import RolloutRecord
from gateway.upstream import VersionSelector


class RolloutRecords(Protocol):
    """Where the router finds a model's rollout record (RolloutRecordReader)."""

    def get(self, model: str) -> RolloutRecord | None: ...


class VersionRouter:
    """Pins `?version=`/`?label=`; sends a canary share of un-pinned traffic to the candidate."""

    def __init__(
        self,
        canary_percent: float,
        canary_label: str,
        default_label: str = "",
        rng=None,
        rollout: RolloutRecords | None = None,
    ) -> None:
        self.canary_fraction = canary_percent / 100.0
        self.canary_label = canary_label
        self.default_label = default_label
        self.rollout = rollout
        self._random = rng or random.Random()

    def select(
        self, version: int | None, label: str | None, model: str = ""
    ) -> tuple[VersionSelector, bool]:
        """Return the selector and whether it was picked by the canary split.

        `version` and `label` come validated from the query (gateway/app.py read_pins).
        Called per request: no await and no I/O, a dict lookup for the record.
        """
        if version is not None and label is not None:
            raise InvalidInputError("give either ?version= or ?label=, not both")
        if version is not None:
            return VersionSelector(version=version), False
        if label is not None:
            return VersionSelector(label=label), False
        record = self.rollout.get(model) if self.rollout is not None else None
        if record is not None:
            fraction = record.canary_fraction
            if fraction > 0 and (fraction >= 1.0 or self._random.random() < fraction):
                return VersionSelector(version=record.candidate), True
            return self._stable(record), False
        if self.canary_fraction > 0 and self._random.random() < self.canary_fraction:
            return VersionSelector(label=self.canary_label), True
        return VersionSelector(label=self.default_label or None), False

    def fallback(self, model: str = "") -> VersionSelector:
        """Where a canary pick goes when the candidate is not served (yet): stable."""
        record = self.rollout.get(model) if self.rollout is not None else None
        if record is not None:
            return self._stable(record)
        return VersionSelector(label=self.default_label or None)

    @staticmethod
    def _stable(record: RolloutRecord) -> VersionSelector:
        # By number, so it is exact whatever the server's labels say at this moment. With
        # no stable version yet, the server's latest (docs/ROLLOUT.md): a default label such
        # as k8s' "stable" names no version then, and would fail every request.
        return VersionSelector(version=record.stable)
