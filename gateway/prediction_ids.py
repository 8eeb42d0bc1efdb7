"""Signed prediction ids: any replica can verify feedback without asking another.

An id is `<payload>.<signature>`, both base64url without padding. The payload is compact
JSON with the model, version, predicted class, issue time (Unix seconds) and a nonce, so
ids are unique; the signature is HMAC-SHA256 over the payload with
GATEWAY_FEEDBACK_SECRET, truncated to 128 bits, which is plenty against forgery and keeps
ids short.

Decoding is strict: only the one canonical encoding of a payload verifies, so an id with
a character changed, added or padded is refused, never read as the original. Whether an
id was already scored is not the signer's business: see gateway/feedback_store.py.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import time
from dataclasses import dataclass

from gateway.errors import MalformedRequestError, PredictionExpiredError

SIGNATURE_BYTES = 16
MAX_ID_LENGTH = 512
# Replicas' clocks differ a little; an id "from the future" by less than this is fine.
CLOCK_SKEW_SECONDS = 300
BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
NOT_ISSUED_HERE = (
    "prediction_id is not one this gateway issued; send the id from a predict response unchanged"
)


@dataclass(frozen=True)
class PredictionClaim:
    """What a valid prediction id vouches for; `key` names the id in the feedback store."""

    model: str
    version: int
    predicted_class: int
    issued_at: int
    key: str


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode_strict(text: str) -> bytes:
    """Decode base64url without padding; refuse anything but the canonical encoding."""
    if not BASE64URL.fullmatch(text):
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # Different texts can decode to the same bytes (unused low bits of the last
    # character); only the one that encodes back to itself is the id that was issued.
    if _b64encode(raw) != text:
        raise ValueError("not canonical")
    return raw


class PredictionIdSigner:
    """Issues and verifies prediction ids with one secret."""

    def __init__(self, secret: str, max_age_seconds: float, clock=time.time) -> None:
        self._key = secret.encode("utf-8")
        self.max_age_seconds = max_age_seconds
        self._clock = clock

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:SIGNATURE_BYTES]

    def issue(self, model: str, version: int, predicted_class: int) -> str:
        """A new id for one prediction, stamped with the time it is issued."""
        payload = json.dumps(
            {
                "m": model,
                "v": version,
                "c": predicted_class,
                "t": int(self._clock()),
                "n": os.urandom(6).hex(),
            },
            separators=(",", ":"),
        ).encode("utf-8")
        return f"{_b64encode(payload)}.{_b64encode(self._sign(payload))}"

    def verify(self, prediction_id: str) -> PredictionClaim:
        """Return the claim; a bad id is a MalformedRequestError (400), an old one a
        PredictionExpiredError (410)."""
        if len(prediction_id) > MAX_ID_LENGTH:
            raise MalformedRequestError(NOT_ISSUED_HERE)
        encoded_payload, dot, encoded_signature = prediction_id.partition(".")
        try:
            payload = _b64decode_strict(encoded_payload)
            signature = _b64decode_strict(encoded_signature)
        except (binascii.Error, ValueError):
            raise MalformedRequestError(
                "prediction_id is malformed (it must be two base64url parts joined by a dot); "
                "send the id from a predict response unchanged"
            ) from None
        if not dot or not payload or not hmac.compare_digest(signature, self._sign(payload)):
            raise MalformedRequestError(
                "prediction_id has an invalid signature; send the id from a predict response "
                "unchanged"
            )
        try:
            claim = json.loads(payload)
            model, version, predicted_class = str(claim["m"]), int(claim["v"]), int(claim["c"])
            issued_at = claim.get("t")
        except (ValueError, KeyError, TypeError):  # signed by us, so only on a format change
            raise MalformedRequestError("prediction_id payload is unreadable") from None
        self._check_age(issued_at)
        return PredictionClaim(model, version, predicted_class, int(issued_at), encoded_signature)

    def _check_age(self, issued_at: object) -> None:
        if not isinstance(issued_at, int):
            raise PredictionExpiredError(
                "prediction_id carries no issue time (an older gateway issued it), so it can "
                "no longer be scored"
            )
        age = self._clock() - issued_at
        if age > self.max_age_seconds:
            raise PredictionExpiredError(
                f"prediction_id was issued {age / 86400:.1f} days ago; feedback is accepted "
                f"for {self.max_age_seconds / 86400:g} days after a prediction "
                "(GATEWAY_FEEDBACK_MAX_AGE)"
            )
        if age < -CLOCK_SKEW_SECONDS:
            raise MalformedRequestError("prediction_id has an issue time in the future")
