"""Small helpers shared by the API tests."""

from __future__ import annotations

import http.client
import socket
from typing import Any

import httpx
from sqlalchemy import select

from registry.models import UsageLog
from registry.services import Registry
from registry.validation_outcome import ValidationOutcome
from registry.vocabulary import CheckStatus

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    """The response is a problem+json of ``status`` whose detail mentions every fragment."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    for fragment in fragments:
        assert fragment in body["detail"], body
    return body


def audit_actions(registry: Registry) -> list[str]:
    with registry.sessions() as s:
        return list(s.scalars(select(UsageLog.action_type).order_by(UsageLog.id)))


def audit_rows(registry: Registry, action: str) -> list[UsageLog]:
    with registry.sessions() as s:
        return list(
            s.scalars(select(UsageLog).where(UsageLog.action_type == action).order_by(UsageLog.id))
        )


def make_model(http: httpx.Client, name: str = "text2img", **overrides: Any) -> dict[str, Any]:
    body = {"name": name, "taskType": "ImageGeneration", "provider": "Internal", **overrides}
    response = http.post("/api/v1/models", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def make_version(
    http: httpx.Client, model: str, version: str = "1.0", **overrides: Any
) -> dict[str, Any]:
    response = http.post(
        f"/api/v1/models/{model}/versions", json={"versionNumber": version, **overrides}
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def upload(
    http: httpx.Client, model: str, version: str, data: bytes, **params: str
) -> httpx.Response:
    return http.put(
        f"/api/v1/models/{model}/versions/{version}/artifact", content=data, params=params
    )


def pass_validation(
    registry: Registry, *, security: str = "Passed", functional: str = "Passed"
) -> int:
    """Play the worker for every queued run, recording the given statuses through the real
    queue (claim, then complete). Returns how many runs it completed."""
    done = 0
    while (job := registry.validations.claim("test-worker")) is not None:
        registry.validations.complete(
            job,
            "test-worker",
            ValidationOutcome(
                security=CheckStatus(security),
                functional=CheckStatus(functional),
                sha256=job.sha256,
                benchmark={"latencyMs": {"p95": 1.0}},
            ),
        )
        done += 1
    return done


class RawUpload:
    """A PUT written by hand on a socket, so that a test can stop in the middle of the body."""

    def __init__(self, port: int, token: str, *, length: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        head = (
            f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {length}\r\n\r\n"
        )
        self.sock.sendall(head.encode())

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        answer = http.client.HTTPResponse(self.sock)
        try:
            answer.begin()
            return answer.status, dict(answer.getheaders()), answer.read()
        finally:
            answer.close()

    def close(self) -> None:
        self.sock.close()
