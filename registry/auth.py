"""API keys: token format, hashing and scopes.

A token is ``<apiKey>.<secret>``. The secret has 256 bits of entropy, so a single SHA-256 is the
right hash: a slow password hash (bcrypt, argon2) buys nothing against brute force of a random
256-bit value and would cost milliseconds on every request. Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    MODELS_READ = "models:read"
    MODELS_WRITE = "models:write"
    DEPLOYMENTS_WRITE = "deployments:write"
    FEEDBACK_WRITE = "feedback:write"
    ADMIN = "admin"


ALL_SCOPES = tuple(s.value for s in Scope)
KEY_PREFIX = "mr_"
_TOKEN_RE = re.compile(r"^(mr_[A-Za-z0-9]{20})\.([A-Za-z0-9_-]{43})$")
HASH_SCHEME = "sha256"


@dataclass(frozen=True)
class Principal:
    """Who is acting: the user behind the key, the key itself and what it may do."""

    user_id: uuid.UUID
    api_client_id: uuid.UUID | None
    scopes: frozenset[str]
    key_name: str = ""

    def allows(self, scope: Scope | str) -> bool:
        return Scope.ADMIN in self.scopes or str(scope) in self.scopes


def new_token() -> tuple[str, str]:
    """A fresh ``(apiKey, secret)`` pair."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    api_key = KEY_PREFIX + "".join(secrets.choice(alphabet) for _ in range(20))
    secret = secrets.token_urlsafe(32)
    return api_key, secret


def hash_secret(secret: str) -> str:
    return f"{HASH_SCHEME}${hashlib.sha256(secret.encode()).hexdigest()}"


def verify_secret(secret: str, stored: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored)


def split_token(token: str) -> tuple[str, str] | None:
    """``(apiKey, secret)``, or None when the token is not of our form."""
    match = _TOKEN_RE.match(token)
    return (match.group(1), match.group(2)) if match else None
