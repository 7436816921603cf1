"""Salted password hashes, so no plain-text password enters the log or the state."""

from __future__ import annotations

import hashlib
import hmac
import os

__all__ = ["hash_password", "verify_password"]


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.sha256(salt + password.encode()).hexdigest()
    return f"sha256${salt.hex()}${digest}"


def verify_password(password: str, password_hash: str) -> bool:
    scheme, _, rest = password_hash.partition("$")
    salt_hex, _, _ = rest.partition("$")
    if scheme != "sha256":
        return False
    return hmac.compare_digest(hash_password(password, bytes.fromhex(salt_hex)), password_hash)
