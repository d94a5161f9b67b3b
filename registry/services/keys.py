"""API keys and the users behind them."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from registry.auth import (
    ALL_SCOPES,
    Principal,
    Scope,
    hash_secret,
    new_token,
    split_token,
    verify_secret,
)
from registry.db import DB_UNAVAILABLE_ERRORS, lock_row
from registry.errors import Conflict, Invalid, NotFound, TooManyRequests, Unauthorized
from registry.ids import resolve_text
from registry.models import APIClient, User
from registry.ratelimit import FailureLimiter
from registry.services import audit
from registry.types import utcnow

ADMIN_EMAIL = "admin@modelreg.local"


@dataclass(frozen=True)
class KeyInfo:
    id: uuid.UUID
    api_key: str
    name: str
    scopes: tuple[str, ...]
    is_active: bool
    user_id: uuid.UUID
    user_email: str
    created_at: object
    updated_at: object


@dataclass(frozen=True)
class IssuedKey:
    """A newly created key. ``token`` is shown once and never stored."""

    info: KeyInfo
    token: str


def _scopes(client: APIClient) -> tuple[str, ...]:
    perms = client.permissions or {}
    scopes = perms.get("scopes", [])
    return tuple(str(s) for s in scopes) if isinstance(scopes, list) else ()


def _info(client: APIClient, user: User) -> KeyInfo:
    return KeyInfo(
        id=client.id,
        api_key=client.api_key,
        name=client.name,
        scopes=_scopes(client),
        is_active=client.is_active,
        user_id=user.id,
        user_email=user.email,
        created_at=client.created_at,
        updated_at=client.updated_at,
    )


class KeyService:
    """API keys. Verified tokens are cached for ``cache_seconds`` (authentication is on every
    request's path); a revocation clears this process's cache at once, and other processes
    within ``cache_seconds``.

    Failed authentications are counted per API key and per client address; past
    ``failure_limit`` (for a key) or ``address_failure_limit`` (for an address) within
    ``failure_window_seconds``, a *failed* attempt from that address or for that key gets
    :class:`TooManyRequests` instead of :class:`Unauthorized`. The secret is always checked
    first: a right token is never refused by the throttle, so that nobody can lock a key's owner
    out by sending wrong secrets for its public key id. (Guessing a 256-bit secret is hopeless
    anyway; the throttle makes a guesser slow and visible, it is not what keeps a key safe.)"""

    MAX_CACHED = 10_000

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        cache_seconds: float = 5.0,
        failure_limit: int = 10,
        failure_window_seconds: float = 60.0,
        address_failure_limit: int = 100,
    ) -> None:
        self.sessions = sessions
        self.cache_seconds = cache_seconds
        self.failures = FailureLimiter(limit=failure_limit, window_seconds=failure_window_seconds)
        # An address is often shared (a NAT, a proxy): it gets a larger budget than a key, so
        # one misconfigured client does not lock out every other client behind it so soon.
        self.address_failures = FailureLimiter(
            limit=address_failure_limit, window_seconds=failure_window_seconds
        )
        # sha256 of the whole token -> (expiry on the monotonic clock, api key, principal)
        self._verified: dict[str, tuple[float, str, Principal]] = {}

    def cached(self, token: str) -> Principal | None:
        """The principal of ``token`` when this process verified it within ``cache_seconds``
        (what ``authenticate`` would return without I/O), else None: then it would have to ask
        the database, or refuse the token. Counts nothing."""
        cached = self._verified.get(_fingerprint(token))
        if cached is not None and cached[0] > time.monotonic():
            return cached[2]
        return None

    def authenticate(self, token: str, *, client: str | None = None) -> Principal:
        """The principal behind ``token``. ``client`` is the caller's network address, when
        known: failures are counted against it as well as against the key."""
        parts = split_token(token)
        addresses = [f"addr:{client}"] if client else []
        if parts is None:
            self._refuse(
                [], addresses, Unauthorized("malformed API token: expected <apiKey>.<secret>")
            )
        subjects = [f"key:{parts[0]}"]
        fingerprint = _fingerprint(token)
        cached = self._verified.get(fingerprint)
        if cached is not None and cached[0] > time.monotonic():
            return cached[2]
        try:
            principal = self._verify(*parts)
        except Unauthorized as exc:
            self._refuse(subjects, addresses, exc)
        except DB_UNAVAILABLE_ERRORS:
            # The database is down: a token this process verified before (and did not see
            # revoked) still passes, for what needs no database (cached endpoint answers);
            # anything else still answers 503.
            if cached is not None:
                return cached[2]
            raise
        if self.cache_seconds > 0:
            if len(self._verified) >= self.MAX_CACHED:
                self._verified.clear()
            self._verified[fingerprint] = (
                time.monotonic() + self.cache_seconds,
                parts[0],
                principal,
            )
        return principal

    def _refuse(self, keys: list[str], addresses: list[str], failure: Unauthorized) -> NoReturn:
        """Count one failed authentication; raise 429 if the key or the address had already
        spent its budget, else ``failure`` (401)."""
        waits = [
            w
            for w in (self.failures.retry_after(keys), self.address_failures.retry_after(addresses))
            if w is not None
        ]
        self.failures.record_failure(keys)
        self.address_failures.record_failure(addresses)
        if waits:
            wait = max(waits)
            raise TooManyRequests(
                f"too many failed authentications; retry in {wait} s", retry_after=wait
            ) from None
        raise failure

    def _forget(self, api_key: str) -> None:
        for fingerprint, (_expiry, key, _principal) in list(self._verified.items()):
            if key == api_key:
                self._verified.pop(fingerprint, None)

    def _verify(self, api_key: str, secret: str) -> Principal:
        with self.sessions() as s:
            row = s.execute(
                select(APIClient, User)
                .join(User, User.id == APIClient.user_id)
                .where(APIClient.api_key == api_key)
            ).first()
        # One message for every failure, so that a caller cannot probe which keys exist.
        if row is None:
            hash_secret(secret)  # same work as a real check: no timing oracle on key existence
            raise Unauthorized("invalid API key")
        client, user = row
        if not verify_secret(secret, client.secret_hash) or not client.is_active:
            raise Unauthorized("invalid API key")
        if user.deleted_at is not None:
            raise Unauthorized("invalid API key")
        return Principal(
            user_id=user.id,
            api_client_id=client.id,
            scopes=frozenset(_scopes(client)),
            key_name=client.name,
        )

    def create(
        self,
        actor: Principal,
        *,
        name: str,
        scopes: list[str],
        user_email: str | None = None,
    ) -> IssuedKey:
        unknown = sorted(set(scopes) - set(ALL_SCOPES))
        if unknown or not scopes:
            raise Invalid(
                f"unknown scopes {unknown}" if unknown else "a key needs at least one scope",
                allowedScopes=list(ALL_SCOPES),
            )
        with self.sessions.begin() as s:
            if user_email:
                user = s.scalar(select(User).where(func.lower(User.email) == user_email.lower()))
                if user is None:
                    user = User(email=user_email, full_name=f"service account {name}"[:100])
                    s.add(user)
                    s.flush()
                    audit.record(s, actor, "user_created", userId=user.id, email=user_email)
                elif user.deleted_at is not None:
                    raise Invalid(f"user {user_email} is deleted")
            else:
                user = s.get_one(User, actor.user_id)
            issued = self._issue(s, user, name=name, scopes=scopes)
            audit.record(
                s,
                actor,
                "api_key_created",
                apiClientId=issued.info.id,
                apiKey=issued.info.api_key,
                name=name,
                scopes=sorted(scopes),
                forUserId=user.id,
            )
        return issued

    @staticmethod
    def _issue(s: Session, user: User, *, name: str, scopes: list[str]) -> IssuedKey:
        api_key, secret = new_token()
        client = APIClient(
            user_id=user.id,
            name=name,
            api_key=api_key,
            secret_hash=hash_secret(secret),
            permissions={"scopes": sorted(set(scopes))},
        )
        s.add(client)
        s.flush()
        return IssuedKey(info=_info(client, user), token=f"{api_key}.{secret}")

    def list(self) -> list[KeyInfo]:
        with self.sessions() as s:
            rows = s.execute(
                select(APIClient, User)
                .join(User, User.id == APIClient.user_id)
                .order_by(APIClient.created_at, APIClient.id)
            ).all()
            return [_info(c, u) for c, u in rows]

    def revoke(self, actor: Principal, api_key: str) -> KeyInfo:
        """Revoke a key. The last active admin key is never revoked (:class:`Conflict`): a
        registry nobody can administer any more needs ``modelreg db admin-key`` to recover.

        Revoking an admin key locks every active admin key, in id order, before counting them:
        two revocations of the last two admin keys cannot both see the other one still active.
        An admin key created meanwhile is not counted, which can only refuse, never allow."""
        with self.sessions.begin() as s:
            api_key = resolve_text(s, APIClient.api_key, api_key, what="key")
            found = s.scalar(select(APIClient.id).where(APIClient.api_key == api_key))
            if found is None:
                raise NotFound(f"no API key {api_key!r}")
            admins = {c.id for c in self._active_admins(s)} | {found}
            locked = [lock_row(s, APIClient, key_id) for key_id in sorted(admins, key=str)]
            client = next(c for c in locked if c is not None and c.id == found)
            user = s.get_one(User, client.user_id)
            if client.is_active:
                if self._is_admin(s, client) and not any(
                    c is not None and c.id != found and self._is_admin(s, c) for c in locked
                ):
                    raise Conflict(
                        f"{api_key} is the last active admin key; create another admin key "
                        "before revoking it",
                        apiKey=api_key,
                    )
                client.is_active = False
                client.updated_at = utcnow()
                audit.record(s, actor, "api_key_revoked", apiClientId=client.id, apiKey=api_key)
            s.flush()
            info = _info(client, user)
        self._forget(api_key)  # after the commit: this process stops trusting it at once
        return info

    @staticmethod
    def _is_admin(s: Session, client: APIClient) -> bool:
        """An active key with the admin scope, of a user who is not deleted."""
        if not client.is_active or Scope.ADMIN.value not in _scopes(client):
            return False
        user = s.get(User, client.user_id)
        return user is not None and user.deleted_at is None

    @staticmethod
    def _active_admins(s: Session) -> Sequence[APIClient]:
        # The scopes are JSON: filtered here rather than in SQL, the same on both databases.
        active = s.scalars(select(APIClient).where(APIClient.is_active)).all()
        return [c for c in active if Scope.ADMIN.value in _scopes(c)]

    def mint_admin(self, *, name: str = "recovery-admin") -> IssuedKey:
        """An admin key made straight in the database, for an operator who lost every key (or
        revoked them by other means). The admin user is created, or restored if deleted."""
        with self.sessions.begin() as s:
            user = s.scalar(select(User).where(User.email == ADMIN_EMAIL))
            restored = user is not None and user.deleted_at is not None
            return self._issue_admin(
                s, user, name=name, via="modelreg db admin-key", restoredUser=restored
            )

    def bootstrap_admin(self) -> IssuedKey | None:
        """On a registry with no key at all, create the admin user and an admin key."""
        with self.sessions.begin() as s:
            if s.scalar(select(func.count()).select_from(APIClient)):
                return None
            user = s.scalar(select(User).where(User.email == ADMIN_EMAIL))
            return self._issue_admin(s, user, name="bootstrap-admin", bootstrap=True)

    def _issue_admin(
        self, s: Session, user: User | None, *, name: str, **audited: Any
    ) -> IssuedKey:
        """An admin key for the admin user (created if missing, restored if deleted), audited
        as ``api_key_created`` with ``audited`` saying how it came about."""
        if user is None:
            user = User(email=ADMIN_EMAIL, username="admin", full_name="modelreg admin")
            s.add(user)
            s.flush()
        user.deleted_at = None
        issued = self._issue(s, user, name=name, scopes=[Scope.ADMIN.value])
        system = Principal(user_id=user.id, api_client_id=None, scopes=frozenset())
        audit.record(
            s,
            system,
            "api_key_created",
            apiClientId=issued.info.id,
            apiKey=issued.info.api_key,
            name=name,
            scopes=[Scope.ADMIN.value],
            **audited,
        )
        return issued


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
