"""Standard Webhooks signatures (https://www.standardwebhooks.com): what receivers verify.

``webhook-signature: v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}.{body}")>``, where the key is
the base64 part of a ``whsec_...`` secret. No Airflow import, so receivers can copy this file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = [
    "SigningError",
    "new_secret",
    "sign",
    "signature_headers",
    "validate_secret",
]

PREFIX = "whsec_"


class SigningError(ValueError):
    """A secret that is not ``whsec_`` followed by base64."""


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except ValueError:
        raise SigningError(
            "a webhook secret is 'whsec_' followed by base64 (make one with "
            "`python -c 'from cupid_airflow.signing import new_secret; print(new_secret())'`)"
        ) from None


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def validate_secret(secret: str) -> str:
    _key(secret)
    return secret
