"""A small typed Python client for the modelreg HTTP API. The CLI is built on it.

from modelreg_client import Client
client = Client.from_config()            # ~/.config/modelreg/credentials, or MODELREG_URL/_TOKEN
client.create_model("text2img", task_type="ImageGeneration", provider="Internal")
client.create_version("text2img", "1.0")
client.upload_artifact("text2img", "1.0", "model.onnx")

It needs httpx and the standard library, nothing of the server: the answers are the light
objects of ``modelreg_client.schemas``.
"""

from __future__ import annotations

import configparser
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from modelreg_client.schemas import (
    DeploymentEventOut,
    DeploymentOut,
    DeploymentPage,
    FeedbackBatchOut,
    FeedbackCompareOut,
    FeedbackPage,
    FeedbackSummaryOut,
    HistoryOut,
    KeyCreated,
    KeyOut,
    ModelOut,
    ValidationRunOut,
    VersionOut,
)
from modelreg_client.vocabulary import ArtifactFormat, DeploymentTarget, Environment

CHUNK = 1024 * 1024
DEFAULT_URL = "http://127.0.0.1:8000"
Progress = Callable[[int], None]


def default_credentials_file() -> Path:
    return Path(
        os.environ.get("MODELREG_CREDENTIALS_FILE")
        or Path.home() / ".config" / "modelreg" / "credentials"
    )


class ModelregError(Exception):
    """The server answered with an error; ``problem`` is its problem+json body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.title = str(problem.get("title", ""))
        self.detail = str(problem.get("detail", ""))
        super().__init__(f"{status} {self.title}: {self.detail}")


class ChecksumMismatch(Exception):
    pass


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            if progress:
                progress(len(chunk))
    return digest.hexdigest()


def _seg(value: str) -> str:
    return quote(value, safe="")


class Client:
    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    @classmethod
    def from_config(
        cls, url: str | None = None, token: str | None = None, credentials_file: Path | None = None
    ) -> Client:
        """Explicit arguments win, then MODELREG_URL / MODELREG_TOKEN, then the credentials file."""
        url = url or os.environ.get("MODELREG_URL")
        token = token or os.environ.get("MODELREG_TOKEN")
        path = credentials_file or default_credentials_file()
        if (url is None or token is None) and path.is_file():
            parser = configparser.ConfigParser(interpolation=None)
            parser.read(path)
            if parser.has_section("default"):
                url = url or parser.get("default", "url", fallback=None)
                token = token or parser.get("default", "token", fallback=None)
        return cls(url or DEFAULT_URL, token)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        self._raise_for(response)
        return response

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        if response.is_success or response.status_code == 304:
            return
        response.read()
        try:
            body = response.json()
        except ValueError:
            body = {"title": response.reason_phrase, "detail": response.text[:500]}
        if not isinstance(body, dict):
            body = {"detail": str(body)}
        raise ModelregError(response.status_code, body)

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        params = {k: v for k, v in params.items() if v is not None}
        while True:
            page = self._request("GET", path, params=params).json()
            yield from page["items"]
            if not page.get("nextCursor"):
                return
            params["cursor"] = page["nextCursor"]

    # -- health ------------------------------------------------------------------------------

    def ready(self) -> dict[str, Any]:
        result: dict[str, Any] = self.http.get("/readyz").json()
        return result

    # -- models ------------------------------------------------------------------------------

    def create_model(
        self,
        name: str,
        *,
        task_type: str,
        provider: str,
        description: str | None = None,
        is_active: bool = True,
    ) -> ModelOut:
        body = {
            "name": name,
            "taskType": task_type,
            "provider": provider,
            "description": description,
            "isActive": is_active,
        }
        return ModelOut.from_wire(self._request("POST", "/api/v1/models", json=body).json())

    def list_models(
        self,
        *,
        task_type: str | None = None,
        provider: str | None = None,
        is_active: bool | None = None,
        q: str | None = None,
        page_size: int = 100,
        filter: str | None = None,
        order_by: str | None = None,
    ) -> Iterator[ModelOut]:
        """``filter`` is the API's search expression (``tag.stage = 'candidate'``);
        ``order_by`` its sort order."""
        params = {
            "taskType": task_type,
            "provider": provider,
            "q": q,
            "limit": page_size,
            "isActive": None if is_active is None else str(is_active).lower(),
            "filter": filter,
            "orderBy": order_by,
        }
        for item in self._pages("/api/v1/models", params):
            yield ModelOut.from_wire(item)

    def get_model(self, name: str) -> ModelOut:
        return ModelOut.from_wire(self._request("GET", f"/api/v1/models/{_seg(name)}").json())

    def update_model(self, name: str, **changes: Any) -> ModelOut:
        return ModelOut.from_wire(
            self._request("PATCH", f"/api/v1/models/{_seg(name)}", json=changes).json()
        )

    def delete_model(self, name: str) -> None:
        self._request("DELETE", f"/api/v1/models/{_seg(name)}")

    # -- versions ----------------------------------------------------------------------------

    def _vpath(self, model: str, version: str | None = None) -> str:
        path = f"/api/v1/models/{_seg(model)}/versions"
        return f"{path}/{_seg(version)}" if version is not None else path

    def create_version(
        self,
        model: str,
        version_number: str,
        *,
        format: str = ArtifactFormat.ONNX,
        release_notes: str | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> VersionOut:
        body = {
            "versionNumber": version_number,
            "format": format,
            "releaseNotes": release_notes,
            "parameters": parameters,
        }
        return VersionOut.from_wire(self._request("POST", self._vpath(model), json=body).json())

    def list_versions(
        self,
        model: str,
        *,
        status: str | None = None,
        page_size: int = 100,
        filter: str | None = None,
        order_by: str | None = None,
    ) -> Iterator[VersionOut]:
        params = {"status": status, "limit": page_size, "filter": filter, "orderBy": order_by}
        for item in self._pages(self._vpath(model), params):
            yield VersionOut.from_wire(item)

    def get_version(self, model: str, version: str) -> VersionOut:
        return VersionOut.from_wire(self._request("GET", self._vpath(model, version)).json())

    def update_version(self, model: str, version: str, **changes: Any) -> VersionOut:
        return VersionOut.from_wire(
            self._request("PATCH", self._vpath(model, version), json=changes).json()
        )

    def transition(
        self,
        model: str,
        version: str,
        status: str,
        reason: str | None = None,
        *,
        force: bool = False,
    ) -> VersionOut:
        return VersionOut.from_wire(
            self._request(
                "POST",
                f"{self._vpath(model, version)}/transitions",
                json={"status": status, "reason": reason, "force": force},
            ).json()
        )

    # -- tags --------------------------------------------------------------------------------

    def _tag_path(self, model: str, key: str, version: str | None) -> str:
        base = (
            self._vpath(model, version) if version is not None else f"/api/v1/models/{_seg(model)}"
        )
        # The key is one segment ('/' quoted). Its dots are quoted too: a key may be "." or
        # "..", which a URL would otherwise resolve away (".." on a model's tag is the model).
        return f"{base}/tags/{_seg(key).replace('.', '%2E')}"

    def set_tag(
        self, model: str, key: str, value: str, *, version: str | None = None
    ) -> dict[str, Any]:
        """Set (or replace) a tag on the model, or on one of its versions with ``version``;
        returns the model or version as the API answers it (camelCase JSON), tags included."""
        result: dict[str, Any] = self._request(
            "PUT", self._tag_path(model, key, version), json={"value": value}
        ).json()
        return result

    def delete_tag(self, model: str, key: str, *, version: str | None = None) -> None:
        """Remove a tag from the model (or the version); 404 when it has none by that key."""
        self._request("DELETE", self._tag_path(model, key, version))

    # -- validations -------------------------------------------------------------------------

    def request_validation(self, model: str, version: str) -> ValidationRunOut:
        return ValidationRunOut.from_wire(
            self._request("POST", f"{self._vpath(model, version)}/validations").json()
        )

    def list_validations(self, model: str, version: str) -> list[ValidationRunOut]:
        runs = self._request("GET", f"{self._vpath(model, version)}/validations").json()
        return [ValidationRunOut.from_wire(r) for r in runs]

    def get_validation(self, validation_id: str) -> ValidationRunOut:
        return ValidationRunOut.from_wire(
            self._request("GET", f"/api/v1/validations/{_seg(validation_id)}").json()
        )

    def upload_artifact(
        self,
        model: str,
        version: str,
        path: str | Path,
        *,
        filename: str | None = None,
        sha256: str | None = None,
        progress: Progress | None = None,
    ) -> VersionOut:
        """Stream the file. With ``sha256`` the server refuses a body that hashes otherwise."""
        path = Path(path)
        size = path.stat().st_size

        def body() -> Iterator[bytes]:
            with path.open("rb") as fh:
                while chunk := fh.read(CHUNK):
                    if progress:
                        progress(len(chunk))
                    yield chunk

        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        if sha256:
            headers["X-Checksum-Sha256"] = sha256
        params = {"filename": filename or path.name}
        try:
            response = self.http.put(
                f"{self._vpath(model, version)}/artifact",
                content=body(),
                headers=headers,
                params=params,
                timeout=None,
            )
        except (httpx.WriteError, httpx.RemoteProtocolError) as exc:
            raise ModelregError(
                0,
                {
                    "title": "Upload interrupted",
                    "detail": f"the server closed the connection: {exc}",
                },
            ) from exc
        self._raise_for(response)
        return VersionOut.from_wire(response.json())

    def download_artifact(
        self,
        model: str,
        version: str,
        dest: str | Path,
        *,
        progress: Progress | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> tuple[str, int]:
        """Stream to ``dest`` (written beside it first, renamed when verified).

        Returns ``(sha256, size)``. Raises ``ChecksumMismatch`` if the bytes do not hash to
        the server's ETag; nothing is left at ``dest`` then.
        """
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.part")
        digest = hashlib.sha256()
        size = 0
        with self.http.stream(
            "GET", f"{self._vpath(model, version)}/artifact", timeout=None
        ) as response:
            self._raise_for(response)
            expected = response.headers.get("X-Checksum-Sha256") or response.headers.get(
                "ETag", ""
            ).strip('"')
            if on_start:
                on_start(int(response.headers.get("Content-Length", 0)))
            try:
                with tmp.open("wb") as fh:
                    for chunk in response.iter_bytes(CHUNK):
                        fh.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                        if progress:
                            progress(len(chunk))
                actual = digest.hexdigest()
                if expected and actual != expected:
                    raise ChecksumMismatch(
                        f"downloaded bytes hash to {actual}, the registry says {expected}"
                    )
                tmp.replace(dest)
            finally:
                tmp.unlink(missing_ok=True)
        return digest.hexdigest(), size

    # -- deployments -------------------------------------------------------------------------

    def deploy(
        self,
        model: str,
        version: str,
        *,
        environment: str,
        strategy: str,
        params: dict[str, Any] | None,
        target: str = DeploymentTarget.LOCAL,
    ) -> DeploymentOut:
        """Ask for a rollout (202): the controller carries it out; poll ``deployment(id)``."""
        body = {
            "model": model,
            "versionNumber": version,
            "environment": environment,
            "deploymentStrategy": strategy,
            "strategyParams": params,
            "target": target,
        }
        return DeploymentOut.from_wire(
            self._request("POST", "/api/v1/deployments", json=body).json()
        )

    def deployments(
        self,
        model: str | None = None,
        environment: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> DeploymentPage:
        """One page of deployments, newest first; pass ``next_cursor`` on for the next."""
        params = {
            "model": model,
            "environment": environment,
            "status": status,
            "limit": limit,
            "cursor": cursor,
        }
        params = {k: v for k, v in params.items() if v is not None}
        return DeploymentPage.from_wire(
            self._request("GET", "/api/v1/deployments", params=params).json()
        )

    def deployment(self, deployment_id: str) -> DeploymentOut:
        return DeploymentOut.from_wire(
            self._request("GET", f"/api/v1/deployments/{_seg(deployment_id)}").json()
        )

    def deployment_events(self, deployment_id: str, after: int = 0) -> list[DeploymentEventOut]:
        events = self._request(
            "GET", f"/api/v1/deployments/{_seg(deployment_id)}/events", params={"after": after}
        ).json()
        return [DeploymentEventOut.from_wire(e) for e in events]

    def deployment_action(
        self, deployment_id: str, action: str, reason: str | None = None
    ) -> DeploymentOut:
        """``promote``, ``pause``, ``resume``, ``abort`` or ``undeploy`` (carried out by the
        controller's next pass)."""
        return DeploymentOut.from_wire(
            self._request(
                "POST",
                f"/api/v1/deployments/{_seg(deployment_id)}/{_seg(action)}",
                json={"reason": reason},
            ).json()
        )

    def rollback(self, model: str, environment: str, reason: str | None = None) -> DeploymentOut:
        """Serve the previous Active version again; returns the deployment that will serve."""
        return DeploymentOut.from_wire(
            self._request(
                "POST",
                f"/api/v1/models/{_seg(model)}/rollback",
                json={"environment": environment, "reason": reason},
            ).json()
        )

    def history(self, model: str, environment: str, at: str | None = None) -> HistoryOut:
        """The model's deployment ledger in the environment; with ``at`` (ISO 8601) also what
        served at that time."""
        params = {"environment": environment, "at": at}
        return HistoryOut.from_wire(
            self._request(
                "GET",
                f"/api/v1/models/{_seg(model)}/history",
                params={k: v for k, v in params.items() if v is not None},
            ).json()
        )

    def endpoint(
        self, model: str, environment: str = Environment.PRODUCTION, key: str | None = None
    ) -> dict[str, Any]:
        """The weighted endpoints serving the model, and one pick (sticky with ``key``)."""
        params = {"environment": environment, "key": key}
        result: dict[str, Any] = self._request(
            "GET",
            f"/api/v1/models/{_seg(model)}/endpoint",
            params={k: v for k, v in params.items() if v is not None},
        ).json()
        return result

    # -- keys --------------------------------------------------------------------------------

    def create_key(self, name: str, scopes: list[str], *, user: str | None = None) -> KeyCreated:
        body = {"name": name, "scopes": scopes, "user": user}
        return KeyCreated.from_wire(self._request("POST", "/api/v1/keys", json=body).json())

    def list_keys(self) -> list[KeyOut]:
        return [KeyOut.from_wire(k) for k in self._request("GET", "/api/v1/keys").json()]

    def revoke_key(self, api_key: str) -> KeyOut:
        return KeyOut.from_wire(
            self._request("POST", f"/api/v1/keys/{_seg(api_key)}/revoke").json()
        )

    # -- feedback ----------------------------------------------------------------------------

    def submit_feedback(self, items: list[dict[str, Any]]) -> FeedbackBatchOut:
        """Submit feedback items (camelCase fields): which were kept, which rejected and why.
        Raises :class:`ModelregError` (422) when every item is rejected."""
        body: dict[str, Any] = items[0] if len(items) == 1 else {"items": items}
        return FeedbackBatchOut.from_wire(
            self._request("POST", "/api/v1/feedback", json=body).json()
        )

    def list_feedback(
        self,
        model: str,
        version: str,
        *,
        since: str | None = None,
        until: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> FeedbackPage:
        """One page of a version's feedback, newest first (``next_cursor`` for the next)."""
        params = {"since": since, "until": until, "limit": limit, "cursor": cursor}
        return FeedbackPage.from_wire(
            self._request(
                "GET",
                f"{self._vpath(model, version)}/feedback",
                params={k: v for k, v in params.items() if v is not None},
            ).json()
        )

    def feedback_summary(
        self, model: str, version: str, *, since: str | None = None, until: str | None = None
    ) -> FeedbackSummaryOut:
        params = {"since": since, "until": until}
        return FeedbackSummaryOut.from_wire(
            self._request(
                "GET",
                f"{self._vpath(model, version)}/feedback/summary",
                params={k: v for k, v in params.items() if v is not None},
            ).json()
        )

    def compare_feedback(
        self, model: str, environment: str = Environment.PRODUCTION
    ) -> FeedbackCompareOut:
        """The versions serving now, each summarized over the current rollout window."""
        return FeedbackCompareOut.from_wire(
            self._request(
                "GET",
                f"/api/v1/models/{_seg(model)}/feedback/compare",
                params={"environment": environment},
            ).json()
        )
