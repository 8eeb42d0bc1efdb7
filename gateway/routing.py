"""Which model version a request goes to: pinned, or split between stable and canary."""

from __future__ import annotations

import random

from gateway.errors import InvalidInputError
from gateway.upstream import VersionSelector


class VersionRouter:
    """Pins `?version=`/`?label=`; sends `canary_percent` of un-pinned traffic to canary."""

    def __init__(
        self, canary_percent: float, canary_label: str, default_label: str = "", rng=None
    ) -> None:
        self.canary_fraction = canary_percent / 100.0
        self.canary_label = canary_label
        self.default_label = default_label
        self._random = rng or random.Random()

    def select(self, version: int | None, label: str | None) -> tuple[VersionSelector, bool]:
        """Return the selector and whether it was picked by the canary split.

        `version` and `label` come validated from the query (gateway/app.py read_pins).
        """
        if version is not None and label is not None:
            raise InvalidInputError("give either ?version= or ?label=, not both")
        if version is not None:
            return VersionSelector(version=version), False
        if label is not None:
            return VersionSelector(label=label), False
        if self.canary_fraction > 0 and self._random.random() < self.canary_fraction:
            return VersionSelector(label=self.canary_label), True
        return VersionSelector(label=self.default_label or None), False
