"""The upload lease: renewed while bytes flow, and an upload that lost it touches nothing.

The lease is 3 s here, renewed every second; the tests pause between body parts to let a
renewal, or an expiry, happen. They assert what happened, never how long it took.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from registry.models import ArtifactUpload
from registry.services import Registry
from registry.settings import Settings
from registry.types import utcnow
from tests.support.helpers import RawUpload, assert_problem, make_model, make_version
from tests.support.live_server import LiveServer

MiB = 1024 * 1024
PATH = "/api/v1/models/m/versions/1/artifact"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"upload_lease_seconds": 3})


@pytest.fixture
def raw(server: LiveServer, admin_token: str) -> Iterator[Callable[..., RawUpload]]:
    opened: list[RawUpload] = []

    def start(**kwargs: Any) -> RawUpload:
        opened.append(RawUpload(server.port, admin_token, path=PATH, **kwargs))
        return opened[-1]

    yield start
    for sender in opened:
        sender.close()


def _lease(registry: Registry) -> ArtifactUpload | None:
    with registry.sessions() as s:
        return s.scalar(select(ArtifactUpload))


def _wait(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def test_a_slow_upload_keeps_renewing_its_lease(
    http: httpx.Client, registry: Registry, raw: Callable[..., RawUpload]
) -> None:
    make_model(http, "m")
    make_version(http, "m", "1")
    data = os.urandom(4 * MiB)
    sender = raw(length=len(data))
    sender.send(data[:MiB])
    _wait(lambda: _lease(registry) is not None, "the upload holds a lease")
    first = _lease(registry)
    assert first is not None
    for part in range(1, 4):  # each part arrives after a renewal is due
        time.sleep(1.2)
        sender.send(data[part * MiB : (part + 1) * MiB])
        if part == 2:
            _wait(
                lambda: (
                    (lease := _lease(registry)) is not None and lease.expires_at > first.expires_at
                ),
                "the lease was renewed",
            )
    status, _headers, answer = sender.response()
    assert status == 201, answer
    assert _lease(registry) is None
    version = http.get("/api/v1/models/m/versions/1").json()
    assert version["sha256"] == hashlib.sha256(data).hexdigest()


def test_an_upload_that_lost_its_lease_leaves_the_winner_alone(
    http: httpx.Client, registry: Registry, raw: Callable[..., RawUpload]
) -> None:
    make_model(http, "m")
    make_version(http, "m", "1")
    slow = os.urandom(3 * MiB)
    sender = raw(length=len(slow))
    sender.send(slow[:MiB])
    _wait(lambda: _lease(registry) is not None, "the slow upload holds a lease")
    with registry.sessions.begin() as s:  # as if the slow upload had stalled past its lease
        s.execute(update(ArtifactUpload).values(expires_at=utcnow() - timedelta(seconds=1)))
    winner = os.urandom(MiB)
    taken = http.put(PATH, content=winner)
    assert taken.status_code == 201, taken.text
    time.sleep(1.2)  # the slow upload's next chunk is due a renewal, which must fail
    sender.send(slow[MiB:])
    status, _headers, answer = sender.response()
    assert status == 409, answer
    assert b"lost its lease" in answer
    version = http.get("/api/v1/models/m/versions/1").json()
    assert version["sha256"] == hashlib.sha256(winner).hexdigest()
    download = http.get(PATH)
    assert download.content == winner  # the winner's object was neither replaced nor deleted
    assert_problem(http.put(PATH, content=b"again"), 409, "immutable")
