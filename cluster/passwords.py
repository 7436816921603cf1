"""Salted password hashes, so no plain-text password enters the log or the state.

The form is RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt ‖ SHA-256(salt ‖ password))
with a 4-byte random salt, so definitions exported from RabbitMQ import here and back unchanged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

__all__ = ["HASHING_ALGORITHM", "hash_password", "is_password_hash", "verify_password"]

HASHING_ALGORITHM = "rabbit_password_hashing_sha256"
_SALT_BYTES = 4
_DIGEST_BYTES = 32


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    digest = hashlib.sha256(salt + password.encode()).digest()
    return base64.b64encode(salt + digest).decode()


def _decoded(password_hash: str) -> bytes | None:
    try:
        raw = base64.b64decode(password_hash, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == _SALT_BYTES + _DIGEST_BYTES else None


def is_password_hash(password_hash: str) -> bool:
    """Whether a hash from a definitions file has the form this module writes."""
    return _decoded(password_hash) is not None


def verify_password(password: str, password_hash: str) -> bool:
    raw = _decoded(password_hash)
    if raw is None:
        return False  # "" (a user with no password, RabbitMQ's clear_password) matches nothing
    return hmac.compare_digest(hash_password(password, raw[:_SALT_BYTES]), password_hash)
