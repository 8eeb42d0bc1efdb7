"""Signed prediction ids: any replica can score feedback without shared state.

An id is `<payload>.<signature>`, both base64url without padding. The payload is compact
JSON with the model, version and predicted class (plus a nonce, so ids are unique); the
signature is HMAC-SHA256 over the payload with GATEWAY_FEEDBACK_SECRET, truncated to 128
bits, which is plenty against forgery and keeps ids short.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass

from gateway.errors import MalformedRequestError

SIGNATURE_BYTES = 16
MAX_ID_LENGTH = 512


@dataclass(frozen=True)
class PredictionClaim:
    """What a valid prediction id vouches for."""

    model: str
    version: int
    predicted_class: int


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PredictionIdSigner:
    """Issues and verifies prediction ids with one secret."""

    def __init__(self, secret: str) -> None:
        self._key = secret.encode("utf-8")

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:SIGNATURE_BYTES]

    def issue(self, model: str, version: int, predicted_class: int) -> str:
        """A new id for one prediction."""
        payload = json.dumps(
            {"m": model, "v": version, "c": predicted_class, "n": os.urandom(6).hex()},
            separators=(",", ":"),
        ).encode("utf-8")
        return f"{_b64encode(payload)}.{_b64encode(self._sign(payload))}"

    def verify(self, prediction_id: str) -> PredictionClaim:
        """Return the claim, or raise MalformedRequestError (HTTP 400) for a bad id."""
        if not isinstance(prediction_id, str) or len(prediction_id) > MAX_ID_LENGTH:
            raise MalformedRequestError("prediction_id is not one this gateway issued")
        encoded_payload, dot, encoded_signature = prediction_id.partition(".")
        try:
            payload = _b64decode(encoded_payload)
            signature = _b64decode(encoded_signature)
        except (binascii.Error, ValueError):
            raise MalformedRequestError(
                "prediction_id is malformed; send the id from a predict response unchanged"
            ) from None
        if not dot or not payload or not hmac.compare_digest(signature, self._sign(payload)):
            raise MalformedRequestError(
                "prediction_id has an invalid signature; send the id from a predict response "
                "unchanged"
            )
        try:
            claim = json.loads(payload)
            return PredictionClaim(str(claim["m"]), int(claim["v"]), int(claim["c"]))
        except (ValueError, KeyError, TypeError):  # signed by us, so only on a key change
            raise MalformedRequestError("prediction_id payload is unreadable") from None
