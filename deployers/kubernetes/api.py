"""``KubeApi``: the few Kubernetes API calls the deployer makes, over the official client.

The only module that imports ``kubernetes``, and only when a ``KubeApi`` is built, so that the
command line starts fast. Objects go in and come out as plain dicts (the JSON the API server
speaks), never as the client's generated models.

- ``apply(obj)``: server-side apply, a PATCH with ``Content-Type: application/apply-patch+yaml``,
  ``fieldManager=modelreg`` and ``force=true``: applying the same object twice changes nothing.
- ``get_deployment``, ``list_deployments``, ``list_services``: reads; 404 means absent.
- ``delete(kind, namespace, name)``: ``False`` when it was already gone.

``ApiException`` becomes :class:`TemporaryError` for 409, 429 and 5xx (and for a connection that
fails), :class:`PermanentError` with the API server's message for the other 4xx.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from deployers.base import PermanentError, TemporaryError

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from registry.settings import Settings

__all__ = ["APPLY_CONTENT_TYPE", "FIELD_MANAGER", "KubeApi", "resource_path"]

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
FIELD_MANAGER = "modelreg"
REQUEST_TIMEOUT = 30.0
TEMPORARY_STATUSES = frozenset({409, 429})

#: kind -> (API group path, plural): the kinds the deployer manages.
_RESOURCES: dict[str, tuple[str, str]] = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Service": ("/api/v1", "services"),
    "HTTPRoute": ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
    "VirtualService": ("/apis/networking.istio.io/v1beta1", "virtualservices"),
}

T = TypeVar("T")


def resource_path(kind: str, namespace: str, name: str | None = None) -> str:
    """The URL path of a namespaced collection of ``kind``, or of one object in it."""
    try:
        group, plural = _RESOURCES[kind]
    except KeyError:
        raise PermanentError(f"modelreg does not manage objects of kind {kind}") from None
    path = f"{group}/namespaces/{namespace}/{plural}"
    return path if name is None else f"{path}/{name}"


class KubeApi:
    """The deployer's view of one cluster; see the module docstring."""

    def __init__(self, client: ApiClient) -> None:
        self._client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> KubeApi:
        """From the kubeconfig context ``kube_context``; without one, the in-cluster config (a
        controller running in a pod), else the kubeconfig's current context. Raises
        :class:`PermanentError` when there is none."""
        from kubernetes import client, config

        configuration = client.Configuration()
        try:
            if settings.kube_context:
                config.load_kube_config(
                    context=settings.kube_context,
                    client_configuration=configuration,
                    persist_config=False,
                )
            else:
                try:
                    config.load_incluster_config(client_configuration=configuration)
                except config.ConfigException:
                    config.load_kube_config(
                        client_configuration=configuration, persist_config=False
                    )
        except config.ConfigException as exc:
            raise PermanentError(f"no usable Kubernetes configuration: {exc}") from exc
        return cls(client.ApiClient(configuration))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> KubeApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls -----------------------------------------------------------------------------

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply ``obj``; the object as the server now has it."""
        metadata = obj["metadata"]
        path = resource_path(obj["kind"], metadata["namespace"], metadata["name"])
        what = f"apply {obj['kind']} {metadata['namespace']}/{metadata['name']}"
        applied = self._call(
            what,
            lambda: self._request(
                "PATCH",
                path,
                query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                body=obj,
                content_type=APPLY_CONTENT_TYPE,
            ),
        )
        return applied or {}

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        path = resource_path("Deployment", namespace, name)
        return self._call_or_absent(
            f"get Deployment {namespace}/{name}", lambda: self._request("GET", path)
        )

    def list_deployments(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return self._list("Deployment", namespace, label_selector)

    def list_services(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return self._list("Service", namespace, label_selector)

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete the object (its dependents in the background); ``False`` if it was gone."""
        path = resource_path(kind, namespace, name)
        found = self._call_or_absent(
            f"delete {kind} {namespace}/{name}",
            lambda: self._request(
                "DELETE",
                path,
                body={
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "propagationPolicy": "Background",
                },
                content_type="application/json",
            ),
        )
        return found is not None

    # -- plumbing --------------------------------------------------------------------------

    def _list(self, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        path = resource_path(kind, namespace)
        found = self._call_or_absent(
            f"list {kind} in {namespace} ({label_selector})",
            lambda: self._request("GET", path, query=[("labelSelector", label_selector)]),
        )
        if found is None:  # no such namespace (yet): nothing of ours
            return []
        items: list[dict[str, Any]] = found.get("items") or []
        for item in items:  # list items carry no kind
            item.setdefault("kind", kind)
        return items

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        response = self._client.call_api(
            path,
            method,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=REQUEST_TIMEOUT,
        )
        data = response.data
        if not data:
            return {}
        parsed: dict[str, Any] = json.loads(data)
        return parsed

    def _call_or_absent(
        self, what: str, call: Callable[[], dict[str, Any]]
    ) -> dict[str, Any] | None:
        """``call()``, or ``None`` when the API server answers 404."""
        return self._call(what, call, absent_ok=True)

    def _call(self, what: str, call: Callable[[], T], *, absent_ok: bool = False) -> T | None:
        import urllib3
        from kubernetes.client.exceptions import ApiException

        try:
            return call()
        except ApiException as exc:
            if absent_ok and exc.status == 404:
                return None
            raise _mapped(what, exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TemporaryError(f"cannot {what}: the API server is unreachable: {exc}") from exc


def _mapped(what: str, exc: Any) -> TemporaryError | PermanentError:
    status = int(exc.status or 0)
    message = _server_message(exc)
    text = f"cannot {what}: {status} {exc.reason or ''}".rstrip() + (
        f": {message}" if message else ""
    )
    if status in TEMPORARY_STATUSES or status >= 500 or status == 0:
        return TemporaryError(text)
    return PermanentError(text)


def _server_message(exc: Any) -> str:
    """The ``message`` of the Status object the API server answered with, else its body."""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if not body:
        return ""
    try:
        status = json.loads(body)
    except ValueError:
        return str(body)[:1000]
    if isinstance(status, dict) and status.get("message"):
        return str(status["message"])
    return str(body)[:1000]
