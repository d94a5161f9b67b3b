"""Every manifest the Kubernetes deployer can produce, validated offline.

Deployments and Services against the Kubernetes API schemas that ``kubernetes-validate`` ships
(the two newest versions, strict: unknown fields are errors); HTTPRoutes and VirtualServices
against their CRD schemas, vendored under ``tests/support/kube_schemas`` (see its README).
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions
from typer.testing import CliRunner

from api.cli import app
from deployers.base import Target, VersionRef, Workload
from deployers.kubernetes import manifests
from deployers.kubernetes.naming import dns_label, label_value, resource_name, route_name
from registry.settings import Settings
from registry.storage import HashingReader
from registry.storage.local import LocalStore

SCHEMAS = Path(__file__).parents[1] / "support" / "kube_schemas"
SHA = "0123456789abcdef" * 4
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
KUBE_VERSIONS = sorted(set(all_versions()), key=lambda v: tuple(int(p) for p in v.split(".")))[-2:]

ROLES = ("stable", "canary", "active", "preview")
MODELS = ("m", "Text2Img_v2.large", "a" * 80)


def settings_for(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "storage": "s3",
        "s3_endpoint": "minio.storage:9000",
        "s3_secure": False,
        "s3_region": "eu-1",
        "kube_namespace": "models",
        "kube_artifact_secret": "modelreg-s3",
        "kube_image_pull_secrets": ["registry-a", "registry-b"],
    }
    return Settings(**{**base, **overrides})


def version(number: str = "1.0", fmt: str = "ONNX") -> VersionRef:
    if fmt == "API":
        return VersionRef(
            uuid.uuid4(), number, "API", endpoint="https://api.example.com:8443/v2/models/m"
        )
    return VersionRef(uuid.uuid4(), number, fmt, sha256=SHA, artifact_key="models/m/v/model.onnx")


def all_core_manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    """(id, manifest) for every Deployment and Service the deployer can make."""
    plain = settings_for(storage="local", kube_image_pull_secrets=[], kube_artifact_secret="")
    for settings_id, settings in (("s3", settings_for()), ("local", plain)):
        for model in MODELS:
            target = Target("kubernetes", model, uuid.uuid4(), "production")
            for role in ROLES:
                for replicas, resources in (
                    (1, {}),
                    (3, {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": 1}}),
                ):
                    workload = Workload(
                        uuid.uuid4(), version("2.0-rc.1+build_7"), replicas, role, resources
                    )
                    key = f"{settings_id}-{model[:10]}-{role}-{replicas}"
                    yield (
                        f"deployment-{key}",
                        manifests.deployment_manifest(target, workload, settings=settings),
                    )
                    yield (
                        f"service-{key}",
                        manifests.service_manifest(target, workload, settings=settings),
                    )
            api = Workload(uuid.uuid4(), version("3", "API"), 2)
            yield (
                f"external-service-{settings_id}-{model[:10]}",
                manifests.external_service_manifest(target, api, settings=settings),
            )
            yield (
                f"router-service-{settings_id}-{model[:10]}",
                manifests.router_service_manifest(target, settings=settings),
            )


CORE = list(all_core_manifests())


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize(("manifest_id", "manifest"), CORE, ids=[i for i, _ in CORE])
def test_core_manifests_validate(
    kube_version: str, manifest_id: str, manifest: dict[str, Any]
) -> None:
    kubernetes_validate.validate(manifest, kube_version, strict=True)
    check_names_and_labels(manifest)


def test_the_two_newest_kubernetes_versions_are_used() -> None:
    assert len(KUBE_VERSIONS) == 2
    assert KUBE_VERSIONS[-1] == kubernetes_validate.latest_version()


def check_names_and_labels(manifest: dict[str, Any]) -> None:
    metadata = manifest["metadata"]
    assert DNS_LABEL.fullmatch(metadata["name"]), metadata["name"]
    assert len(metadata["name"]) <= 63
    label_maps = [metadata["labels"]]
    template = manifest.get("spec", {}).get("template")
    if template:
        label_maps.append(template["metadata"]["labels"])
        label_maps.append(manifest["spec"]["selector"]["matchLabels"])
    for labels in label_maps:
        for value in labels.values():
            assert len(value) <= 63
            assert LABEL_VALUE.fullmatch(value), value
    assert metadata["labels"]["app.kubernetes.io/managed-by"] == "modelreg"
    assert metadata["labels"]["app.kubernetes.io/name"] == "modelreg-model-server"


# -- the pod spec ----------------------------------------------------------------------------


def test_the_pod_fetches_verifies_and_serves_the_artifact() -> None:
    target = Target("kubernetes", "Text2Img", uuid.uuid4(), "production")
    v = version("1.0")
    workload = Workload(uuid.uuid4(), v, 3, "canary", {"limits": {"cpu": "2", "memory": "4Gi"}})
    deployment = manifests.deployment_manifest(target, workload, settings=settings_for())
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["progressDeadlineSeconds"] == 600
    pod = spec["template"]["spec"]
    (fetch,) = pod["initContainers"]
    assert fetch["command"] == [
        "modelreg",
        "fetch-artifact",
        "--artifact-key",
        v.artifact_key,
        "--sha256",
        SHA,
        "--output",
        "/models/model.onnx",
    ]
    env = {e["name"]: e for e in fetch["env"]}
    assert env["MODELREG_S3_ENDPOINT"]["value"] == "minio.storage:9000"
    assert env["MODELREG_S3_ACCESS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "modelreg-s3", "key": "MODELREG_S3_ACCESS_KEY"}
    }
    (server,) = pod["containers"]
    assert server["command"][:3] == ["modelreg", "serve-model", "--artifact"]
    assert server["command"][server["command"].index("--model") + 1] == "Text2Img"
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert server["resources"] == {"limits": {"cpu": "2", "memory": "4Gi"}}
    for container in (fetch, server):
        assert container["image"] == "ghcr.io/modelreg/modelreg:0.1.0"
        assert container["securityContext"] == {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    assert pod["imagePullSecrets"] == [{"name": "registry-a"}, {"name": "registry-b"}]
    assert {v["name"]: v for v in pod["volumes"]} == {
        "models": {"name": "models", "emptyDir": {}},
        "tmp": {"name": "tmp", "emptyDir": {}},
    }
    labels = deployment["metadata"]["labels"]
    assert labels["modelreg.io/model"] == label_value("Text2Img")
    assert labels["modelreg.io/version"] == "1.0"
    assert labels["modelreg.io/deployment-id"] == str(workload.deployment_id)
    assert labels["modelreg.io/slot"] == "canary"
    assert "modelreg.io/slot" not in spec["template"]["metadata"]["labels"]
    assert deployment["metadata"]["annotations"]["modelreg.io/model-name"] == "Text2Img"


def test_an_api_version_has_no_deployment() -> None:
    target = Target("kubernetes", "m", uuid.uuid4(), "production")
    with pytest.raises(ValueError, match="no artifact"):
        manifests.deployment_manifest(
            target, Workload(uuid.uuid4(), version("3", "API"), 1), settings=settings_for()
        )


# -- names -----------------------------------------------------------------------------------


def test_names_are_dns_labels_that_never_collide() -> None:
    assert dns_label("text2img") == "text2img"
    assert dns_label("Text2Img") != dns_label("text2img")
    assert dns_label("Text2Img").startswith("text2img-")
    assert dns_label("a_b") != dns_label("a.b") != dns_label("a-b")
    assert label_value("1.0") == "1.0"
    assert label_value("2.0+build") != label_value("2.0-build")
    deployment = uuid.uuid4()
    for model in (*MODELS, "x" * 300, "__", "Ünïcode model"):
        for role in ROLES:
            name = resource_name(
                model=model, environment="production", role=role, deployment_id=deployment
            )
            assert DNS_LABEL.fullmatch(name), name
            assert len(name) <= 63
            assert name.endswith(f"-{role}-{deployment.hex[:8]}")
        route = route_name(model=model, environment="production")
        assert DNS_LABEL.fullmatch(route)
        assert len(route) <= 63
    long_a = resource_name(model="a" * 80, environment="p", role="stable", deployment_id=deployment)
    long_b = resource_name(
        model="a" * 79 + "b", environment="p", role="stable", deployment_id=deployment
    )
    assert long_a != long_b


# -- routers (CRD schemas) -------------------------------------------------------------------

OBJECT_META = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {
        "name": {"type": "string", "maxLength": 63, "pattern": DNS_LABEL.pattern},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}


def closed(schema: Any) -> Any:
    """``schema`` with every object schema that lists properties closed to other ones."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_schema(filename: str) -> dict[str, Any]:
    schema = json.loads((SCHEMAS / filename).read_text())
    schema = closed(schema)
    schema["properties"]["metadata"] = OBJECT_META
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "spec"})
    return schema


ROUTE_SCHEMAS = {
    "HTTPRoute": crd_schema("httproute-gateway.networking.k8s.io-v1.json"),
    "VirtualService": crd_schema("virtualservice-networking.istio.io-v1beta1.json"),
}


def route_manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    settings = settings_for(kube_router="gateway-api")
    for model in MODELS:
        target = Target("kubernetes", model, uuid.uuid4(), "production")
        names = [
            resource_name(model=model, environment="production", role=r, deployment_id=uuid.uuid4())
            for r in ("stable", "canary")
        ]
        for weights in ((100,), (90, 10), (0, 100)):
            backends = list(zip(names, weights, strict=False))
            key = f"{model[:10]}-{'-'.join(map(str, weights))}"
            yield (
                f"httproute-{key}",
                manifests.httproute_manifest(target, backends, settings=settings),
            )
            yield (
                f"virtualservice-{key}",
                manifests.virtualservice_manifest(target, backends, settings=settings),
            )


ROUTES = list(route_manifests())


@pytest.mark.parametrize(("manifest_id", "manifest"), ROUTES, ids=[i for i, _ in ROUTES])
def test_route_manifests_validate_against_their_crd(
    manifest_id: str, manifest: dict[str, Any]
) -> None:
    jsonschema.validate(manifest, ROUTE_SCHEMAS[manifest["kind"]])
    check_names_and_labels(manifest)


@pytest.mark.parametrize("kind", sorted(ROUTE_SCHEMAS))
def test_the_crd_schemas_catch_mistakes(kind: str) -> None:
    """The vendored schemas are not vacuous: a misspelt field or a bad weight fails."""
    target = Target("kubernetes", "m", uuid.uuid4(), "production")
    build = (
        manifests.httproute_manifest if kind == "HTTPRoute" else manifests.virtualservice_manifest
    )
    good = build(target, [("m-production-stable-0", 100)], settings=settings_for())
    misspelt = copy.deepcopy(good)
    misspelt["spec"]["rulez"] = []
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(misspelt, ROUTE_SCHEMAS[kind])
    if kind == "HTTPRoute":
        bad = copy.deepcopy(good)
        bad["spec"]["rules"][0]["backendRefs"][0]["weight"] = -1
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, ROUTE_SCHEMAS[kind])
    wrong_version = {**good, "apiVersion": "example.com/v0"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong_version, ROUTE_SCHEMAS[kind])


# -- fetch-artifact (the initContainer) ------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStore:
    monkeypatch.setenv("MODELREG_STORAGE", "local")
    monkeypatch.setenv("MODELREG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODELREG_ARTIFACT_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("MODELREG_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    return LocalStore(tmp_path / "artifacts")


def test_fetch_artifact_copies_and_verifies(store: LocalStore, tmp_path: Path) -> None:
    stored = store.put("models/m/model.onnx", HashingReader([b"onnx bytes"], max_bytes=1024))
    output = tmp_path / "models" / "model.onnx"
    result = CliRunner().invoke(
        app,
        [
            "fetch-artifact",
            "--artifact-key",
            "models/m/model.onnx",
            "--sha256",
            stored.sha256,
            "--output",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.output
    assert output.read_bytes() == b"onnx bytes"


def test_fetch_artifact_refuses_a_mismatch_with_exit_code_2(
    store: LocalStore, tmp_path: Path
) -> None:
    store.put("models/m/model.onnx", HashingReader([b"onnx bytes"], max_bytes=1024))
    output = tmp_path / "models" / "model.onnx"
    wrong = "0" * 64
    result = CliRunner().invoke(
        app,
        [
            "fetch-artifact",
            "--artifact-key",
            "models/m/model.onnx",
            "--sha256",
            wrong,
            "--output",
            str(output),
        ],
    )
    assert result.exit_code == 2
    assert "sha256" in result.output
    assert wrong in result.output
    assert not output.exists()


def test_the_pod_serves_the_model_a_bundle_version_names() -> None:
    target = Target("kubernetes", "Text2Img", uuid.uuid4(), "production")
    v = replace(version("1.0"), artifact_key="models/m/v/model.tar.gz", model_file="net/a.onnx")
    workload = Workload(uuid.uuid4(), v, 1)
    pod = manifests.deployment_manifest(target, workload, settings=settings_for())["spec"][
        "template"
    ]["spec"]
    (server,) = pod["containers"]
    assert server["command"][-2:] == ["--model-file", "net/a.onnx"]
    plain = manifests.deployment_manifest(
        target, Workload(uuid.uuid4(), version("1.0"), 1), settings=settings_for()
    )
    assert "--model-file" not in plain["spec"]["template"]["spec"]["containers"][0]["command"]
