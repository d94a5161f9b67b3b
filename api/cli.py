"""The ``modelreg`` command line: the server, the database, and a client for the API."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

if TYPE_CHECKING:
    from pydantic import BaseModel

    from api.client import Client
    from api.schemas import DeploymentEventOut, DeploymentOut
    from registry.settings import Settings

app = typer.Typer(
    help="modelreg: a model registry and deployment controller.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
models_app = typer.Typer(help="Registered models.", no_args_is_help=True)
versions_app = typer.Typer(help="Model versions and their artifacts.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (needs an admin key).", no_args_is_help=True)
deployments_app = typer.Typer(
    help="Rollouts: list, inspect, follow and steer deployments.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
app.add_typer(versions_app, name="versions")
app.add_typer(keys_app, name="keys")
app.add_typer(deployments_app, name="deployments")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", envvar="MODELREG_URL", help="API base URL [default: from credentials]"),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="MODELREG_TOKEN",
        help="API token [default: from credentials]",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class _State:
    url: str | None = None
    token: str | None = None


state = _State()


@app.callback()
def _main(url: UrlOpt = None, token: TokenOpt = None) -> None:
    state.url = url
    state.token = token


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def api() -> Iterator[Client]:
    """A client from --url/--token, the environment or the credentials file; errors made
    readable."""
    import httpx

    from api.client import ChecksumMismatch, Client, ModelregError

    client = Client.from_config(state.url, state.token)
    try:
        yield client
    except ModelregError as exc:
        extra = {
            k: v
            for k, v in exc.problem.items()
            if k not in ("type", "title", "status", "detail", "instance")
        }
        hint = f"\n  {json.dumps(extra)}" if extra else ""
        fail(f"{exc.status} {exc.title}: {exc.detail}{hint}")
    except ChecksumMismatch as exc:
        fail(str(exc))
    except httpx.TransportError as exc:
        fail(
            f"cannot reach modelreg at {client.base_url}: {exc}. Is `modelreg serve` running?",
            code=2,
        )
    finally:
        client.close()


def _emit_json(data: Any) -> None:
    from pydantic import BaseModel

    def plain(item: Any) -> Any:
        return item.model_dump(mode="json", by_alias=True) if isinstance(item, BaseModel) else item

    payload = [plain(i) for i in data] if isinstance(data, list) else plain(data)
    out.print_json(json.dumps(payload))


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def _size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def _show(obj: BaseModel, title: str) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column(overflow="fold")
    for key, value in obj.model_dump(by_alias=True).items():
        if isinstance(value, dict):
            value = json.dumps(value)
        table.add_row(key, "" if value is None else str(value))
    out.print(table)


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    out.print(table)


@contextmanager
def _progress(description: str) -> Iterator[Callable[[int | None], Callable[[int], None]]]:
    """Yields ``start(total) -> advance``; a rich progress bar with speed and time left."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    ) as bar:

        def start(total: int | None) -> Callable[[int], None]:
            task = bar.add_task(description, total=total)
            return lambda n: bar.advance(task, n)

        yield start


# -- server and database --------------------------------------------------------------------


def _settings() -> Settings:
    from pydantic import ValidationError

    from registry.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        fail(f"invalid MODELREG_* setting:\n{exc}")


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [default: MODELREG_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: MODELREG_PORT]")] = None,
) -> None:
    """Run the API (http://127.0.0.1:8000, docs at /docs) on the configured database and store.

    On the embedded SQLite default, migrations are applied at start. On first start an admin
    API key is created, printed once and saved for the CLI.
    """
    import uvicorn

    from api.app import create_app
    from api.server import uvicorn_config
    from registry import migrate

    settings = _settings()
    if host:
        settings.host = host
    if port:
        settings.port = port
    _logging(settings.log_level)
    log = logging.getLogger("modelreg.serve")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.should_auto_migrate:
        migrate.upgrade(settings.database_url)
    application = create_app(settings)
    registry = application.state.registry
    head = migrate.head_revision(settings.database_url)
    current = migrate.current_revision(registry.engine)
    if current != head:
        fail(
            f"the database is at revision {current or '(empty)'}, the code needs {head}: "
            "run `modelreg db upgrade` first"
        )
    if settings.bootstrap_admin:
        issued = registry.keys.bootstrap_admin()
        if issued is not None:
            _write_credentials(settings.credentials_file, settings.client_url, issued.token)
            out.print("[bold green]Created the admin API key[/] (shown once, never stored):")
            out.print(f"  {issued.token}", highlight=False, soft_wrap=True)
            out.print(f"Saved for the CLI in {settings.credentials_file} (mode 0600).")
    log.info(
        "database %s, artifacts %s",
        registry.engine.url.render_as_string(),
        registry.store.describe(),
    )
    log.info("API on http://%s:%d (docs at /docs)", settings.host, settings.port)
    if settings.worker_enabled:
        from validators.worker import start_worker_thread

        worker_thread, stop_worker = start_worker_thread(registry)
    if settings.controller_enabled:
        from controller.runner import start_controller

        controller_runner = start_controller(registry)
    try:
        server = uvicorn.Server(uvicorn_config(application, settings))
        server.run()
        if not server.started:  # the port is taken, say: as uvicorn.run, exit 3
            raise SystemExit(3)
    finally:
        if settings.controller_enabled:
            controller_runner.stop()
        if settings.worker_enabled:
            stop_worker.set()
            worker_thread.join(timeout=10)


def _write_credentials(path: Path, url: str, token: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"[default]\nurl = {url}\ntoken = {token}\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from registry import migrate

    settings = _settings()
    _logging("INFO")
    migrate.upgrade(settings.database_url, revision)
    out.print(f"database at revision {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision, or base")]) -> None:
    """Revert migrations down to REVISION ('base' empties the database)."""
    from registry import migrate

    settings = _settings()
    _logging("INFO")
    migrate.downgrade(settings.database_url, revision)
    out.print(f"database at revision {revision}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision and the newest one the code knows."""
    from registry import migrate
    from registry.db import create_db_engine

    settings = _settings()
    engine = create_db_engine(settings.database_url)
    try:
        current = migrate.current_revision(engine)
    finally:
        engine.dispose()
    head = migrate.head_revision(settings.database_url)
    out.print(f"current: {current or '(empty)'}\nhead:    {head}")


@db_app.command("admin-key")
def db_admin_key(
    name: Annotated[str, typer.Option(help="Name of the new key")] = "recovery-admin",
) -> None:
    """Mint an admin API key straight in the database (MODELREG_DATABASE_URL), for an operator
    who lost every admin key. The token is printed once; the key is audited like any other."""
    from registry.db import create_db_engine, create_session_factory
    from registry.services.keys import KeyService

    settings = _settings()
    engine = create_db_engine(settings.database_url)
    try:
        issued = KeyService(create_session_factory(engine)).mint_admin(name=name)
    finally:
        engine.dispose()
    out.print(f"[bold green]Created admin key[/] {issued.info.api_key} (shown once, never stored):")
    out.print(f"  {issued.token}", highlight=False, soft_wrap=True)


# -- models ---------------------------------------------------------------------------------


@models_app.command("create")
def models_create(
    name: str,
    task: Annotated[
        str,
        typer.Option(
            "--task",
            help="ImageGeneration, TextGeneration, "
            "ImageTransformation, StyleTransfer or ContentSafety",
        ),
    ],
    provider: Annotated[str, typer.Option(help="e.g. Internal, OpenAI")] = "Internal",
    description: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a model."""
    with api() as client:
        model = client.create_model(
            name, task_type=task, provider=provider, description=description
        )
    if as_json:
        _emit_json(model)
    else:
        out.print(f"created model [bold]{model.name}[/] ({model.id})")


@models_app.command("list")
def models_list(
    task: Annotated[str | None, typer.Option("--task")] = None,
    provider: Annotated[str | None, typer.Option()] = None,
    active: Annotated[bool | None, typer.Option("--active/--inactive", show_default=False)] = None,
    query: Annotated[
        str | None, typer.Option("-q", "--query", help="Substring of name or description")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List models."""
    with api() as client:
        items = list(
            client.list_models(task_type=task, provider=provider, is_active=active, q=query)
        )
    if as_json:
        _emit_json(items)
        return
    _table(
        f"{len(items)} model(s)",
        ("name", "task", "provider", "active", "updated", "description"),
        [
            (
                m.name,
                m.task_type,
                m.provider,
                "yes" if m.is_active else "no",
                _when(m.updated_at),
                (m.description or "")[:60],
            )
            for m in items
        ],
    )


@models_app.command("show")
def models_show(name: str, as_json: JsonOpt = False) -> None:
    """Show one model."""
    with api() as client:
        model = client.get_model(name)
    _emit_json(model) if as_json else _show(model, f"model {name}")


@models_app.command("update")
def models_update(
    name: str,
    task: Annotated[str | None, typer.Option("--task")] = None,
    provider: Annotated[str | None, typer.Option()] = None,
    description: Annotated[str | None, typer.Option()] = None,
    active: Annotated[bool | None, typer.Option("--active/--inactive", show_default=False)] = None,
) -> None:
    """Change a model's task type, provider, description or active flag."""
    changes = {
        k: v
        for k, v in {
            "taskType": task,
            "provider": provider,
            "description": description,
            "isActive": active,
        }.items()
        if v is not None
    }
    if not changes:
        fail("nothing to change: pass --task, --provider, --description or --active/--inactive")
    with api() as client:
        model = client.update_model(name, **changes)
    out.print(f"updated model [bold]{model.name}[/]")


@models_app.command("delete")
def models_delete(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask")] = False,
) -> None:
    """Delete a model with all its versions and artifacts."""
    if not yes and not typer.confirm(f"Delete model {name} with all its versions and artifacts?"):
        raise typer.Exit(1)
    with api() as client:
        client.delete_model(name)
    out.print(f"deleted model [bold]{name}[/]")


# -- versions -------------------------------------------------------------------------------


def _parameters(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(Path(raw[1:]).read_text() if raw.startswith("@") else raw)
    except (OSError, ValueError) as exc:
        fail(f"--parameters must be a JSON object or @file.json: {exc}")
    if not isinstance(value, dict):
        fail("--parameters must be a JSON object")
    return value


ParamsOpt = Annotated[str | None, typer.Option("--parameters", help="JSON object, or @file.json")]


@versions_app.command("create")
def versions_create(
    model: str,
    version: str,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="ONNX, PyTorch, Pickle, Joblib, SafeTensors, TensorFlow SavedModel or API",
        ),
    ] = "ONNX",
    notes: Annotated[str | None, typer.Option("--notes", help="Release notes")] = None,
    parameters: ParamsOpt = None,
) -> None:
    """Create a version without an artifact (for format API, or to upload later)."""
    with api() as client:
        v = client.create_version(
            model, version, format=fmt, release_notes=notes, parameters=_parameters(parameters)
        )
    out.print(f"created version [bold]{v.version_number}[/] of {model} ({v.status})")


@versions_app.command("upload")
def versions_upload(
    model: str,
    version: str,
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    notes: Annotated[str | None, typer.Option("--notes", help="Release notes")] = None,
    fmt: Annotated[str, typer.Option("--format")] = "ONNX",
    parameters: ParamsOpt = None,
    checksum: Annotated[
        bool,
        typer.Option(
            "--checksum/--no-checksum",
            help="Hash the file first and have the server refuse a body that differs",
        ),
    ] = True,
) -> None:
    """Upload PATH as VERSION of MODEL, creating the version if it does not exist yet."""
    from api.client import ModelregError, sha256_file

    size = path.stat().st_size
    with api() as client:
        try:
            existing = client.get_version(model, version)
        except ModelregError as exc:
            if exc.status != 404 or "version" not in exc.detail:
                raise
            existing = None
        if existing is not None and existing.sha256:
            fail(
                f"version {version} of {model} already has an artifact (sha256 "
                f"{existing.sha256}); versions are immutable, upload a new version"
            )
        digest = None
        with _progress("hashing ") as start:
            if checksum:
                digest = sha256_file(path, start(size))
        if existing is None:
            client.create_version(
                model, version, format=fmt, release_notes=notes, parameters=_parameters(parameters)
            )
        with _progress("uploading") as start:
            result = client.upload_artifact(
                model, version, path, sha256=digest, progress=start(size)
            )
    out.print(f"uploaded [bold]{model} {result.version_number}[/]")
    out.print(f"  sha256  {result.sha256}", highlight=False)
    out.print(f"  size    {result.size_bytes} bytes ({_size(result.size_bytes)})", highlight=False)
    out.print(f"  path    {result.source_path}", highlight=False)


@versions_app.command("list")
def versions_list(
    model: str,
    status: Annotated[
        str | None, typer.Option(help="Staged, Production, Deprecated, Archived or Failed")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List a model's versions, newest first."""
    with api() as client:
        items = list(client.list_versions(model, status=status))
    if as_json:
        _emit_json(items)
        return
    _table(
        f"{model}: {len(items)} version(s)",
        ("version", "status", "format", "size", "sha256", "created"),
        [
            (
                v.version_number,
                v.status,
                v.format or "",
                _size(v.size_bytes),
                (v.sha256 or "")[:12],
                _when(v.created_at),
            )
            for v in items
        ],
    )


@versions_app.command("show")
def versions_show(model: str, version: str, as_json: JsonOpt = False) -> None:
    """Show one version."""
    with api() as client:
        v = client.get_version(model, version)
    if as_json:
        _emit_json(v)
        return
    _show(v, f"{model} {version}")
    if v.signature is not None:
        from registry.io_signature import describe_signature

        out.print("signature", highlight=False)
        for line in describe_signature(v.signature.model_dump()):
            out.print(f"  {line}", highlight=False)


@versions_app.command("update")
def versions_update(
    model: str,
    version: str,
    notes: Annotated[str | None, typer.Option("--notes")] = None,
    parameters: ParamsOpt = None,
) -> None:
    """Change a version's release notes or parameters."""
    changes: dict[str, Any] = {}
    if notes is not None:
        changes["releaseNotes"] = notes
    if parameters is not None:
        changes["parameters"] = _parameters(parameters)
    if not changes:
        fail("nothing to change: pass --notes or --parameters")
    with api() as client:
        client.update_version(model, version, **changes)
    out.print(f"updated {model} {version}")


@versions_app.command("download")
def versions_download(
    model: str,
    version: str,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="File to write [default: the artifact's name, in the current folder]",
        ),
    ] = None,
) -> None:
    """Download a version's artifact; its SHA-256 is verified against the registry's."""
    with api() as client:
        if output is None:
            info = client.get_version(model, version)
            if not info.source_path:
                fail(f"version {version} of {model} has no artifact")
            output = Path(info.source_path.rsplit("/", 1)[-1])
        with _progress("downloading") as start:
            advance: list[Callable[[int], None]] = []
            digest, size = client.download_artifact(
                model,
                version,
                output,
                on_start=lambda total: advance.append(start(total or None)),
                progress=lambda n: advance[0](n),
            )
    out.print(f"wrote {output} ({size} bytes), sha256 {digest} verified", highlight=False)


@versions_app.command("transition")
def versions_transition(
    model: str,
    version: str,
    status: Annotated[str, typer.Argument(help="Production, Deprecated, Archived or Failed")],
    reason: Annotated[str | None, typer.Option(help="Why; kept in the audit log")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Override a closed gate (admin key, needs --reason)")
    ] = False,
) -> None:
    """Move a version through its lifecycle (Staged → Production → Deprecated → Archived)."""
    with api() as client:
        v = client.transition(model, version, status, reason, force=force)
    out.print(f"{model} {version} is now [bold]{v.status}[/]")


# -- validation -----------------------------------------------------------------------------


@app.command()
def validate(
    model: str,
    version: str,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the result")] = False,
    new: Annotated[
        bool, typer.Option("--new", help="Queue a new run even if one is already pending")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most")] = 1800,
    as_json: JsonOpt = False,
) -> None:
    """Validate VERSION of MODEL: security scan, functional check and benchmark.

    Follows the run already queued for the version (an upload queues one), or queues a new
    one. With --wait, shows a spinner until the run is done, prints the findings, and exits 1
    if a check failed.
    """
    import time

    with api() as client:
        pending = (
            []
            if new
            else [r for r in client.list_validations(model, version) if r.status != "Done"]
        )
        run = pending[0] if pending else client.request_validation(model, version)
        if not wait:
            if as_json:
                _emit_json(run)
            else:
                verb = "is pending" if pending else "queued"
                out.print(f"validation {run.id} {verb} for {model} {version}")
            return
        deadline = time.monotonic() + timeout
        with err.status(f"validating {model} {version} ...") as spinner:
            while run.status != "Done":
                if time.monotonic() > deadline:
                    fail(f"validation {run.id} is still {run.status} after {timeout:.0f} s")
                time.sleep(1)
                run = client.get_validation(str(run.id))
                spinner.update(f"validating {model} {version}: {run.status} ...")
    if as_json:
        _emit_json(run)
    else:
        _print_validation(run)
    result = run.result
    if result is None or "Failed" in (result.security_scan_status, result.functional_status):
        raise typer.Exit(1)


def _print_validation(run: Any) -> None:
    result = run.result
    if result is None:
        out.print(f"validation {run.id}: {run.status}")
        return
    out.print(f"validation {run.id} of sha256 {run.sha256}", highlight=False)
    out.print(f"  security scan  [bold]{result.security_scan_status}[/]")
    out.print(f"  functional     [bold]{result.functional_status}[/]")
    latency = (result.performance_benchmark or {}).get("latencyMs") or {}
    if latency:
        out.print(
            f"  latency        p50 {latency.get('p50', 0):.2f} ms, p95 {latency.get('p95', 0):.2f}"
            f" ms, p99 {latency.get('p99', 0):.2f} ms",
            highlight=False,
        )
    results = result.results or {}
    findings = list(results.get("findings", []))
    findings += (results.get("security") or {}).get("findings", [])
    findings += (results.get("functional") or {}).get("findings", [])
    if findings:
        _table(
            f"{len(findings)} finding(s)",
            ("severity", "rule", "location", "message"),
            [
                (
                    f.get("severity", ""),
                    f.get("ruleId", ""),
                    f.get("location", ""),
                    f.get("message", ""),
                )
                for f in findings
            ],
        )
    elif results.get("error"):
        out.print(f"  error          {results['error']}", highlight=False)


@app.command()
def worker() -> None:
    """Run the validation worker alone (``modelreg serve`` runs one too)."""
    import signal
    import threading

    from registry.services import build_registry
    from validators.worker import ValidationWorker

    settings = _settings()
    _logging(settings.log_level)
    registry = build_registry(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        ValidationWorker(registry).run_forever(stop)
    finally:
        registry.close()


@app.command()
def controller() -> None:
    """Run the rollout controller alone, until SIGTERM or Ctrl-C.

    ``modelreg serve`` runs one too. Several controllers may share a database: a lease makes
    exactly one act.
    """
    import signal
    import threading

    from controller.runner import start_controller
    from registry.services import build_registry

    settings = _settings()
    _logging(settings.log_level)
    registry = build_registry(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        if settings.controller_metrics_port:
            from api.metrics import serve_metrics

            serve_metrics(registry, host=settings.host, port=settings.controller_metrics_port)
            logging.getLogger("modelreg.controller").info(
                "metrics on http://%s:%d/metrics", settings.host, settings.controller_metrics_port
            )
        runner = start_controller(registry)
        try:
            stop.wait()
        finally:
            runner.stop()
    finally:
        registry.close()


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(raw: str) -> float:
    """Seconds in ``90s``, ``30m``, ``24h``, ``7d`` or a bare number of seconds."""
    text = raw.strip().lower()
    unit = _DURATION_UNITS.get(text[-1:]) if text else None
    number = text[:-1] if unit is not None else text
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise typer.BadParameter(f"{raw!r} is not a duration like 90s, 30m, 24h or 7d") from None
    if seconds < 0 or seconds != seconds:
        raise typer.BadParameter(f"{raw!r}: a duration cannot be negative")
    return seconds


@app.command()
def gc(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would be removed; remove nothing.")
    ] = False,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            help="Only remove orphans last modified longer ago than this (90s, 30m, 24h, 7d).",
        ),
    ] = "24h",
    as_json: JsonOpt = False,
) -> None:
    """Remove artifact objects that no version and no live upload references.

    Runs against the configured store and database directly, like ``modelreg worker``.
    """
    from datetime import timedelta

    from registry.services import build_registry

    age = timedelta(seconds=_duration(older_than))
    settings = _settings()
    _logging(settings.log_level)
    registry = build_registry(settings)
    try:
        report = registry.gc.collect(older_than=age, dry_run=dry_run)
    finally:
        registry.close()
    if as_json:
        _emit_json(report.as_dict())
        return
    verb = "Would remove" if dry_run else "Removed"
    _table(
        f"Garbage collection{' (dry run)' if dry_run else ''}",
        ("", ""),
        [
            ("scanned", str(report.scanned)),
            ("referenced (kept)", str(report.referenced)),
            (f"younger than {older_than} (kept)", str(report.too_young)),
            (verb.lower(), str(report.removed)),
            (f"{verb.lower()} bytes", f"{report.removed_bytes} ({_size(report.removed_bytes)})"),
            (f"{verb.lower()} unfinished uploads", str(report.partial_removed)),
            ("failed", str(report.failed)),
        ],
    )
    for key in report.keys:
        out.print(f"  {key}", highlight=False)
    if report.removed > len(report.keys):
        out.print(f"  … and {report.removed - len(report.keys)} more", highlight=False)
    if report.failed:
        fail(f"{report.failed} objects could not be removed; see the log")


@app.command("prometheus-targets")
def prometheus_targets(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the file here (atomically) instead of stdout"),
    ] = None,
    api_target: Annotated[
        bool, typer.Option("--api/--no-api", help="Also list this API's own /metrics")
    ] = False,
) -> None:
    """Prometheus ``file_sd`` targets for the local model servers (and, with --api, the API).

    The controller keeps ``<server state dir>/prometheus-targets.json`` up to date as it
    starts and stops servers; point a ``file_sd_configs`` entry at that file, or use this
    command to write one elsewhere.
    """
    from deployers.local import LocalDeployer

    settings = _settings()
    assert settings.server_state_dir is not None
    groups = LocalDeployer(state_dir=settings.server_state_dir).prometheus_targets()
    if api_target:
        host = settings.client_url.split("://", 1)[1].rstrip("/")
        groups.append({"targets": [host], "labels": {"job": "modelreg-api"}})
    text = json.dumps(groups, indent=1)
    if output is None:
        out.print_json(text)
        return
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, output)
    out.print(f"wrote {len(groups)} target group(s) to {output}")


# -- deployments ----------------------------------------------------------------------------

TERMINAL_STATUSES = ("Active", "RolledBack", "Failed", "Inactive")
"""Where a rollout ends; ``watch`` stops there (exit 0 only for Active)."""

EnvOpt = Annotated[str, typer.Option("--env", help="Environment: staging, production or testing")]
ReasonOpt = Annotated[str | None, typer.Option(help="Why; kept in the deployment's ledger")]
IntervalOpt = Annotated[float, typer.Option(help="Seconds between refreshes", min=0.05)]


def _deployment_id(raw: str) -> str:
    import uuid

    try:
        return str(uuid.UUID(raw))
    except ValueError:
        fail(
            f"{raw!r} is not a deployment id: give the full UUID (see `modelreg deployments list`)"
        )


def _canary_steps(steps: str | None, pause: str | None) -> list[dict[str, Any]]:
    """``10,50,100`` and ``60s`` → ``[{weight: 10, pause: 60s}, …, {weight: 100, pause: 0s}]``."""
    from registry.rollout_spec import DEFAULT_CANARY_STEPS

    if steps is None:
        weights = [int(str(step["weight"])) for step in DEFAULT_CANARY_STEPS]
    else:
        try:
            weights = [int(w) for w in steps.split(",") if w.strip()]
        except ValueError:
            fail(f"--steps must be comma-separated weights such as 10,50,100, not {steps!r}")
        if not weights:
            fail("--steps needs at least one weight, such as 10,50,100")
    wait = pause or "60s"
    return [
        {"weight": w, "pause": "0s" if i == len(weights) - 1 and w == 100 else wait}
        for i, w in enumerate(weights)
    ]


def _strategy_params(
    strategy: str,
    *,
    raw: str | None,
    steps: str | None,
    pause: str | None,
    replicas: int | None,
    preview_duration: str | None,
    auto_promote: bool | None,
    scale_down_delay: str | None,
    max_hold: str | None,
) -> dict[str, Any]:
    """``--params`` with the flags merged over it."""
    params: dict[str, Any] = {}
    if raw is not None:
        try:
            value = json.loads(Path(raw[1:]).read_text() if raw.startswith("@") else raw)
        except (OSError, ValueError) as exc:
            fail(f"--params must be a JSON object or @file.json: {exc}")
        if not isinstance(value, dict):
            fail("--params must be a JSON object")
        params.update(value)
    if strategy == "canary":
        if steps is not None or pause is not None:
            params["steps"] = _canary_steps(steps, pause)
    elif steps is not None:
        fail(f"--steps is for the canary strategy, not {strategy}")
    elif pause is not None:
        if strategy != "rolling_update":
            fail(f"--pause is for the canary and rolling_update strategies, not {strategy}")
        params["pause"] = pause
    if strategy != "blue_green" and (preview_duration is not None or auto_promote is not None):
        fail(f"--preview-duration and --no-auto-promote are for blue_green, not {strategy}")
    flags = {
        "replicas": replicas,
        "previewDuration": preview_duration,
        "autoPromote": auto_promote,
        "scaleDownDelay": scale_down_delay,
        "maxHold": max_hold,
    }
    params.update({k: v for k, v in flags.items() if v is not None})
    return params


def _step(dep: DeploymentOut) -> str:
    count = dep.progress.step_count
    if not count:
        return ""
    if dep.status == "Active":
        return f"{count}/{count}"
    return f"{min(dep.progress.step_index + 1, count)}/{count}"


def _status_style(status: str) -> str:
    style = {"Active": "green", "Failed": "red", "RolledBack": "red", "Inactive": "dim"}.get(
        status, "yellow"
    )
    return f"[{style}]{status}[/]"


def _hold_reason(dep: DeploymentOut) -> str | None:
    """Why a rollout holds its step (e.g. "waiting for traffic: 3 of 20 requests"), from its
    Progressing condition; None when it does not hold."""
    if dep.progress.hold_since is None or dep.status not in ("Initiated", "Deploying"):
        return None
    for c in dep.conditions:
        if c.get("type") == "Progressing" and c.get("message"):
            return str(c["message"])
    return None


def _condition_rows(dep: DeploymentOut) -> list[tuple[str, ...]]:
    return [
        (
            str(c.get("type", "")),
            str(c.get("status", "")),
            str(c.get("reason", "")),
            str(c.get("message", "")),
        )
        for c in dep.conditions
    ]


def _event_rows(events: list[DeploymentEventOut]) -> list[tuple[str, ...]]:
    return [
        (str(e.id), _when(e.at), e.kind, e.version_number or "", e.actor, e.reason or "")
        for e in events
    ]


EVENT_COLUMNS = ("#", "at", "kind", "version", "actor", "reason")


def _endpoint_rows(answer: dict[str, Any]) -> list[tuple[str, ...]]:
    selected = (answer.get("selected") or {}).get("url")
    return [
        (
            str(e.get("versionNumber", "")),
            str(e.get("role", "")),
            f"{e.get('weight', 0)}%",
            str(e.get("url", "")),
            "yes" if selected is not None and e.get("url") == selected else "",
        )
        for e in answer.get("endpoints", [])
    ]


ENDPOINT_COLUMNS = ("version", "role", "weight", "url", "selected")


def _print_created(dep: DeploymentOut) -> None:
    out.print(
        f"deployment [bold]{dep.id}[/] {_status_style(dep.status)}: {dep.model} "
        f"{dep.version_number} to {dep.environment} ({dep.deployment_strategy})"
    )
    out.print(f"follow it with: modelreg deployments watch {dep.id}", highlight=False)


def _watch_view(
    dep: DeploymentOut, endpoints: dict[str, Any] | None, events: list[DeploymentEventOut]
) -> Any:
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = []
    step = _step(dep)
    head = (
        f"[bold]{dep.model} {dep.version_number}[/] → {dep.environment} "
        f"({dep.deployment_strategy}): {_status_style(dep.status)}"
    )
    if step:
        head += f", step {step}"
    head += f", candidate weight {dep.progress.traffic_weight}%"
    if dep.progress.paused:
        head += " [yellow](paused)[/]"
    parts.append(Text.from_markup(head))
    holding = _hold_reason(dep)
    if holding:
        parts.append(Text(f"holding: {holding}", style="yellow"))
    if endpoints is None:
        parts.append(Text("endpoints: nothing serves yet"))
    else:
        table = Table(title="endpoints", title_justify="left")
        for column in ENDPOINT_COLUMNS[:4]:
            table.add_column(column, overflow="fold")
        for row in _endpoint_rows(endpoints):
            table.add_row(*row[:4])
        parts.append(table)
    gates = [c for c in dep.conditions if c.get("type") in ("Analysis", "Ready", "Failed")]
    for c in gates:
        parts.append(
            Text(f"{c.get('type')}: {c.get('status')} {c.get('reason', '')} {c.get('message', '')}")
        )
    if events:
        table = Table(title="newest events", title_justify="left")
        for column in EVENT_COLUMNS:
            table.add_column(column, overflow="fold")
        for row in _event_rows(events[-8:]):
            table.add_row(*row)
        parts.append(table)
    return Group(*parts)


def _follow(client: Client, deployment_id: str, *, interval: float) -> DeploymentOut:
    """A live view of the rollout, refreshed until its status is terminal."""
    import time

    from rich.live import Live

    from api.client import ModelregError

    events: list[DeploymentEventOut] = []

    def snapshot() -> tuple[DeploymentOut, Any]:
        dep = client.deployment(deployment_id)
        after = events[-1].id if events else 0
        events.extend(client.deployment_events(deployment_id, after=after))
        try:
            endpoints: dict[str, Any] | None = client.endpoint(dep.model, dep.environment)
        except ModelregError as exc:
            if exc.status != 404:
                raise
            endpoints = None
        return dep, _watch_view(dep, endpoints, events)

    dep, view = snapshot()
    with Live(view, console=out, refresh_per_second=4, transient=False) as live:
        while dep.status not in TERMINAL_STATUSES:
            time.sleep(interval)
            dep, view = snapshot()
            live.update(view, refresh=True)
    if not out.is_terminal:
        out.line()  # Live ends a redirected render without one
    return dep


def _exit_for(dep: DeploymentOut) -> None:
    if dep.status != "Active":
        raise typer.Exit(1)


@app.command()
def deploy(
    model: str,
    version: str,
    env: EnvOpt = "production",
    strategy: Annotated[str, typer.Option(help="canary, blue_green or rolling_update")] = "canary",
    steps: Annotated[
        str | None,
        typer.Option(help="Canary traffic weights, e.g. 10,50,100 [default: 10,50,100]"),
    ] = None,
    pause: Annotated[
        str | None,
        typer.Option(help="Pause after each canary step (or rolling replica), e.g. 60s"),
    ] = None,
    replicas: Annotated[int | None, typer.Option(min=1, help="Model-server replicas")] = None,
    preview_duration: Annotated[
        str | None, typer.Option(help="blue_green: how long the preview runs, e.g. 30s")
    ] = None,
    auto_promote: Annotated[
        bool | None,
        typer.Option(
            "--auto-promote/--no-auto-promote",
            help="blue_green: promote after the preview [default: yes]",
            show_default=False,
        ),
    ] = None,
    scale_down_delay: Annotated[
        str | None,
        typer.Option(help="How long the old version keeps its servers (instant rollback)"),
    ] = None,
    max_hold: Annotated[
        str | None, typer.Option(help="How long an inconclusive verdict may hold a step")
    ] = None,
    params: Annotated[
        str | None,
        typer.Option("--params", help="strategyParams as JSON or @file.json; flags win"),
    ] = None,
    target: Annotated[str, typer.Option(help="local or kubernetes")] = "local",
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the rollout; exit 1 unless it ends Active")
    ] = False,
    interval: IntervalOpt = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Roll VERSION of MODEL out to an environment (production needs a passed validation)."""
    strategy_params = _strategy_params(
        strategy,
        raw=params,
        steps=steps,
        pause=pause,
        replicas=replicas,
        preview_duration=preview_duration,
        auto_promote=auto_promote,
        scale_down_delay=scale_down_delay,
        max_hold=max_hold,
    )
    with api() as client:
        dep = client.deploy(
            model,
            version,
            environment=env,
            strategy=strategy,
            params=strategy_params,
            target=target,
        )
        if as_json and not wait:
            _emit_json(dep)
            return
        if not as_json:
            _print_created(dep)
        if not wait:
            return
        if as_json:
            import time

            while dep.status not in TERMINAL_STATUSES:
                time.sleep(interval)
                dep = client.deployment(str(dep.id))
        else:
            dep = _follow(client, str(dep.id), interval=interval)
    if as_json:
        _emit_json(dep)
    else:
        out.print(f"deployment {dep.id} ended {_status_style(dep.status)}")
    _exit_for(dep)


@deployments_app.command("list")
def deployments_list(
    model: Annotated[str | None, typer.Option(help="Only this model")] = None,
    env: Annotated[str | None, typer.Option("--env", help="Only this environment")] = None,
    status: Annotated[
        str | None,
        typer.Option(help="Initiated, Deploying, Active, Inactive, Failed or RolledBack"),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many, newest first")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List deployments, newest first."""
    with api() as client:
        items = client.deployments(model=model, environment=env, status=status, limit=limit).items
    if as_json:
        _emit_json(items)
        return
    _table(
        f"{len(items)} deployment(s)",
        ("id", "model", "version", "env", "strategy", "status", "step", "weight", "created"),
        [
            (
                str(d.id)[:8],
                d.model,
                d.version_number,
                d.environment,
                d.deployment_strategy,
                d.status,
                _step(d),
                f"{d.progress.traffic_weight}%",
                _when(d.created_at),
            )
            for d in items
        ],
    )


@deployments_app.command("show")
def deployments_show(deployment_id: str, as_json: JsonOpt = False) -> None:
    """Show a deployment: status, progress, conditions, endpoint and observed servers."""
    dep_id = _deployment_id(deployment_id)
    with api() as client:
        dep = client.deployment(dep_id)
    if as_json:
        _emit_json(dep)
        return
    table = Table(title=f"deployment {dep.id}", show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column(overflow="fold")
    progress = dep.progress
    rows = [
        ("model", f"{dep.model} {dep.version_number}"),
        ("environment", dep.environment),
        ("status", _status_style(dep.status) + (" (paused)" if progress.paused else "")),
        ("strategy", f"{dep.deployment_strategy} {json.dumps(dep.strategy_params)}"),
        ("target", dep.target),
        ("step", _step(dep)),
        ("weight", f"{progress.traffic_weight}%"),
        ("step started", _when(progress.step_started_at)),
        ("holding since", _when(progress.hold_since)),
        ("holding", _hold_reason(dep) or ""),
        ("endpoint", dep.endpoint or ""),
        ("stable", str(dep.stable_deployment_id or "")),
        ("requested", json.dumps(dep.requested_action) if dep.requested_action else ""),
        ("created", _when(dep.created_at)),
        ("finished", _when(dep.finished_at)),
    ]
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)
    if dep.conditions:
        _table("conditions", ("type", "status", "reason", "message"), _condition_rows(dep))
    instances = _observed_instances(dep)
    if instances:
        _table("observed instances", ("version", "url", "ready", "pid"), instances)


def _observed_instances(dep: DeploymentOut) -> list[tuple[str, ...]]:
    """The servers the controller last observed: this deployment's, and its stable's."""
    rows: list[tuple[str, ...]] = []
    for slot, workload in (dep.observed_state or {}).items():
        if not isinstance(workload, dict):
            continue
        label = dep.version_number if slot == "workload" else slot
        ready = f"{workload.get('readyReplicas', 0)}/{workload.get('replicas', 0)} ready"
        instances = workload.get("instances") or []
        if not instances:
            rows.append((label, str(workload.get("url") or ""), ready, ""))
        for i in instances:
            rows.append(
                (
                    label,
                    str(i.get("url", "")),
                    "ready" if i.get("ready") else "not ready",
                    str(i.get("pid") or ""),
                )
            )
    return rows


@deployments_app.command("events")
def deployments_events(deployment_id: str, as_json: JsonOpt = False) -> None:
    """A deployment's ledger: steps, verdicts, promotions, aborts and rollbacks."""
    dep_id = _deployment_id(deployment_id)
    with api() as client:
        events = client.deployment_events(dep_id)
    if as_json:
        _emit_json(events)
        return
    _table(f"{len(events)} event(s) of {dep_id}", EVENT_COLUMNS, _event_rows(events))


@deployments_app.command("watch")
def deployments_watch(deployment_id: str, interval: IntervalOpt = 1.0) -> None:
    """Follow a rollout live until it ends: exit 0 if it ends Active, 1 otherwise."""
    dep_id = _deployment_id(deployment_id)
    with api() as client:
        dep = _follow(client, dep_id, interval=interval)
    out.print(f"deployment {dep.id} is {_status_style(dep.status)}")
    _exit_for(dep)


def _action(action: str, deployment_id: str, reason: str | None) -> None:
    dep_id = _deployment_id(deployment_id)
    with api() as client:
        dep = client.deployment_action(dep_id, action, reason)
    out.print(
        f"{action} requested for deployment {dep.id} ({dep.model} {dep.version_number}, "
        f"{_status_style(dep.status)}); the controller carries it out on its next pass"
    )


@deployments_app.command("promote")
def deployments_promote(deployment_id: str, reason: ReasonOpt = None) -> None:
    """Complete the remaining steps now: all traffic to the candidate."""
    _action("promote", deployment_id, reason)


@deployments_app.command("pause")
def deployments_pause(deployment_id: str, reason: ReasonOpt = None) -> None:
    """Hold the rollout at its current step (a failed verdict still rolls back)."""
    _action("pause", deployment_id, reason)


@deployments_app.command("resume")
def deployments_resume(deployment_id: str, reason: ReasonOpt = None) -> None:
    """Let a paused rollout go on."""
    _action("resume", deployment_id, reason)


@deployments_app.command("abort")
def deployments_abort(deployment_id: str, reason: ReasonOpt = None) -> None:
    """All traffic back to the stable version; the candidate stops (RolledBack)."""
    _action("abort", deployment_id, reason)


@deployments_app.command("undeploy")
def deployments_undeploy(deployment_id: str, reason: ReasonOpt = None) -> None:
    """Take an Active deployment out of service (Inactive); its servers stop."""
    _action("undeploy", deployment_id, reason)


@app.command()
def rollback(
    model: str, env: EnvOpt = "production", reason: ReasonOpt = None, as_json: JsonOpt = False
) -> None:
    """Serve the previous Active version of MODEL again (instant while its servers are up)."""
    with api() as client:
        dep = client.rollback(model, env, reason)
    if as_json:
        _emit_json(dep)
        return
    out.print(
        f"rolling {model} in {env} back to {dep.version_number}: deployment {dep.id} "
        f"{_status_style(dep.status)}"
    )
    out.print(f"follow it with: modelreg deployments watch {dep.id}", highlight=False)


@app.command()
def history(
    model: str,
    env: EnvOpt = "production",
    at: Annotated[
        str | None,
        typer.Option(help="ISO 8601 time (UTC without an offset): also show what served then"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """What served MODEL in an environment, and when: the deployment ledger, oldest first."""
    if at is not None:
        from datetime import datetime

        try:
            datetime.fromisoformat(at)
        except ValueError:
            fail(f"--at must be an ISO 8601 time such as 2026-01-31T12:00:00Z, not {at!r}")
    with api() as client:
        result = client.history(model, env, at=at)
    if as_json:
        _emit_json(result)
        return
    _table(
        f"{model} in {env}: {len(result.events)} event(s)",
        EVENT_COLUMNS,
        _event_rows(result.events),
    )
    if result.serving_at is not None:
        _table(
            f"served at {at}",
            ("version", "role", "weight", "url"),
            [
                (
                    str(r.get("versionNumber", "")),
                    str(r.get("role", "")),
                    f"{r.get('weight', 0)}%",
                    str(r.get("url", "")),
                )
                for r in result.serving_at
            ],
        )


@app.command()
def endpoint(
    model: str,
    env: EnvOpt = "production",
    key: Annotated[
        str | None, typer.Option(help="A user or session id: makes the pick sticky")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The endpoints serving MODEL now, with their weights, and the one picked."""
    with api() as client:
        answer = client.endpoint(model, env, key)
    if as_json:
        _emit_json(answer)
        return
    _table(
        f"{model} in {env} (generation {answer.get('generation')})",
        ENDPOINT_COLUMNS,
        _endpoint_rows(answer),
    )
    selected = answer.get("selected")
    if selected:
        out.print(
            f"selected: {selected.get('versionNumber')} at {selected.get('url')}", highlight=False
        )
    else:
        out.print("selected: none (every endpoint has weight 0)")


# -- keys -----------------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for")],
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope",
            help="models:read, models:write, deployments:write, feedback:write or admin; "
            "repeat for several",
        ),
    ],
    user: Annotated[
        str | None,
        typer.Option(
            help="Email of the user the key acts for; a service account is created if new"
        ),
    ] = None,
) -> None:
    """Create an API key. The token is printed once; only its hash is stored."""
    with api() as client:
        key = client.create_key(name, scope, user=user)
    out.print(
        f"created key [bold]{key.api_key}[/] for {key.user_email} with scopes "
        f"{', '.join(key.scopes)}"
    )
    out.print("token (shown once, store it now):")
    out.print(f"  {key.token}", highlight=False, soft_wrap=True)


@keys_app.command("list")
def keys_list(as_json: JsonOpt = False) -> None:
    """List API keys (never their secrets)."""
    with api() as client:
        keys = client.list_keys()
    if as_json:
        _emit_json(keys)
        return
    _table(
        f"{len(keys)} key(s)",
        ("api key", "name", "user", "scopes", "active", "created"),
        [
            (
                k.api_key,
                k.name,
                k.user_email,
                ", ".join(k.scopes),
                "yes" if k.is_active else "revoked",
                _when(k.created_at),
            )
            for k in keys
        ],
    )


@keys_app.command("revoke")
def keys_revoke(api_key: Annotated[str, typer.Argument(help="The public key id, mr_…")]) -> None:
    """Revoke an API key at once."""
    with api() as client:
        key = client.revoke_key(api_key)
    out.print(f"revoked key [bold]{key.api_key}[/] ({key.name})")


# -- security scan --------------------------------------------------------------------------


@app.command()
def scan(
    path: Annotated[Path, typer.Argument(help="A model file or folder (scanned recursively)")],
    fmt: Annotated[
        str, typer.Option("--format", help="Output: table, json or sarif (SARIF 2.1.0)")
    ] = "table",
    threshold: Annotated[
        str, typer.Option(help="Lowest severity that fails: LOW, MEDIUM, HIGH or CRITICAL")
    ] = "HIGH",
    allow_com_microsoft: Annotated[
        bool,
        typer.Option("--allow-com-microsoft", help="Allow ONNX operators of com.microsoft"),
    ] = False,
) -> None:
    """Scan a model artifact for malicious content, locally (no server needed).

    Pickles are read as data and never loaded. Exit codes: 0 clean; 1 malicious (a finding at
    or above the threshold); 2 too large (a resource limit stopped the scan); 3 scan error.
    A malicious finding outranks a scan error or a limit: the exit code is then 1.
    """
    import dataclasses

    from validators.report import Severity
    from validators.security import scan_artifact
    from validators.security.policy import DEFAULT_POLICY
    from validators.security.render import EXIT_CODES, findings_table, summary_line
    from validators.security.sarif import to_sarif

    if fmt not in ("table", "json", "sarif"):
        fail(f"--format must be table, json or sarif, not {fmt!r}", code=3)
    if threshold.upper() not in Severity.__members__:
        fail(f"--threshold must be LOW, MEDIUM, HIGH or CRITICAL, not {threshold!r}", code=3)
    policy = dataclasses.replace(
        DEFAULT_POLICY,
        threshold=Severity[threshold.upper()],
        allow_com_microsoft=allow_com_microsoft or DEFAULT_POLICY.allow_com_microsoft,
    )
    report = scan_artifact(path, policy)
    if fmt == "json":
        typer.echo(json.dumps(report.to_dict(), indent=2))
    elif fmt == "sarif":
        typer.echo(json.dumps(to_sarif(report), indent=2))
    else:
        if report.findings:
            out.print(findings_table(report))
        out.print(summary_line(report))
    raise typer.Exit(EXIT_CODES[report.verdict])


# -- model server ---------------------------------------------------------------------------


@app.command("serve-model")
def serve_model(
    model: Annotated[str, typer.Option("--model", help="Model name, served as /v2/models/NAME")],
    version: Annotated[str, typer.Option("--version", help="Model version it reports")],
    port: Annotated[int, typer.Option(help="Port to listen on")],
    sha256: Annotated[
        str, typer.Option("--sha256", help="Expected SHA-256 of the artifact (64 hex digits)")
    ],
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    artifact: Annotated[
        Path | None,
        typer.Option("--artifact", help="A local ONNX file or bundle", dir_okay=False),
    ] = None,
    artifact_key: Annotated[
        str | None,
        typer.Option("--artifact-key", help="Key of the ONNX object in the configured store"),
    ] = None,
    model_file: Annotated[
        str | None,
        typer.Option(
            "--model-file",
            help="The model in a bundle that holds several .onnx files (parameters.modelFile)",
        ),
    ] = None,
    max_body_bytes: Annotated[
        int,
        typer.Option("--max-body-bytes", min=1, help="Largest inference request body (413 above)"),
    ] = 32 * 1024 * 1024,
) -> None:
    """Serve one ONNX model over the Open Inference Protocol (KServe v2 REST) until SIGTERM.

    The artifact is hashed first (an --artifact-key is downloaded to a private temporary
    directory); if its SHA-256 is not --sha256, nothing is served and the exit code is 2.
    A bundle (zip, tar, tar.gz) is unpacked with the security scanner's checks; one that is
    refused, or that onnxruntime cannot load, exits 1.
    """
    import re

    from deployers.model_server import ArtifactMismatch, ModelLoadError, run_model_server
    from registry.errors import RegistryError

    if (artifact is None) == (artifact_key is None):
        fail("give exactly one of --artifact PATH or --artifact-key KEY", code=2)
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        fail(f"--sha256 must be 64 hex digits, got {sha256!r}", code=2)
    settings = _settings()
    _logging(settings.log_level)
    store = None
    if artifact_key is not None:
        from registry.storage import create_store

        store = create_store(settings)
    try:
        run_model_server(
            model_name=model,
            version=version,
            sha256=sha256,
            host=host,
            port=port,
            artifact=artifact,
            artifact_key=artifact_key,
            store=store,
            model_file=model_file,
            max_body_bytes=max_body_bytes,
            log_level=settings.log_level,
        )
    except ArtifactMismatch as exc:
        fail(str(exc), code=2)
    except ModelLoadError as exc:
        fail(str(exc))
    except (RegistryError, OSError) as exc:
        fail(f"cannot read the artifact: {exc}")


@app.command("fetch-artifact")
def fetch_artifact(
    artifact_key: Annotated[
        str, typer.Option("--artifact-key", help="Key of the object in the configured store")
    ],
    sha256: Annotated[
        str, typer.Option("--sha256", help="Expected SHA-256 of the artifact (64 hex digits)")
    ],
    output: Annotated[
        Path, typer.Option("--output", help="Where to write the verified copy", dir_okay=False)
    ],
) -> None:
    """Copy an artifact from the configured store to --output and verify its SHA-256.

    The initContainer of a model-server pod on Kubernetes. On a mismatch nothing is left at
    --output and the exit code is 2 (the pod then fails with the message).
    """
    import re

    from deployers.model_server import ArtifactMismatch, fetch_and_verify
    from registry.errors import RegistryError
    from registry.storage import create_store

    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        fail(f"--sha256 must be 64 hex digits, got {sha256!r}", code=2)
    settings = _settings()
    _logging(settings.log_level)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        fetched = fetch_and_verify(
            sha256=sha256,
            artifact_key=artifact_key,
            store=create_store(settings),
            into=output.parent,
        )
        if fetched != output:
            fetched.replace(output)
    except ArtifactMismatch as exc:
        fail(str(exc), code=2)
    except (RegistryError, OSError) as exc:
        fail(f"cannot fetch the artifact: {exc}")
    err.print(
        f"fetched {artifact_key} to {output} (sha256 {sha256.lower()} verified)",
        markup=False,
        highlight=False,
    )


# -- feedback ------------------------------------------------------------------------------

feedback_app = typer.Typer(
    help="User feedback on versions: submit, summarize, compare serving versions.",
    no_args_is_help=True,
)
app.add_typer(feedback_app, name="feedback")

FEEDBACK_BATCH = 1000
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="From this time on (ISO 8601 with zone)")
]
UntilOpt = Annotated[
    str | None, typer.Option("--until", help="Before this time (ISO 8601 with zone)")
]


def _feedback_lines(path: Path, model: str, version: str) -> list[dict[str, Any]]:
    """The items of a JSON Lines file; an item naming no version is about MODEL VERSION."""
    items: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            fail(f"{path}:{number}: not JSON: {exc}")
        if isinstance(item, dict) and not (
            {"modelVersionId", "model", "versionNumber"} & set(item)
        ):
            item = {"model": model, "versionNumber": version, **item}
        items.append(item)
    if not items:
        fail(f"{path} holds no feedback items")
    return items


@feedback_app.command("submit")
def feedback_submit(
    model: str,
    version: str,
    rating: Annotated[
        int | None, typer.Option("--rating", min=1, max=5, help="1 (worst) to 5 (best)")
    ] = None,
    comment: Annotated[str | None, typer.Option("--comment")] = None,
    generation_request_id: Annotated[
        str | None, typer.Option("--generation-request-id", help="UUID of the generation request")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            exists=True,
            dir_okay=False,
            help="JSON Lines, one item a line (camelCase fields); items without a version "
            "are about MODEL VERSION",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit one rating or comment, or a file of them (sent in batches of 1,000)."""
    from api.client import ModelregError

    if file is not None:
        if rating is not None or comment is not None or generation_request_id is not None:
            fail("give either --file or --rating/--comment/--generation-request-id")
        items = _feedback_lines(file, model, version)
    else:
        if rating is None and comment is None:
            fail("give --rating and/or --comment (or --file)")
        item: dict[str, Any] = {"model": model, "versionNumber": version}
        for key, value in (
            ("rating", rating),
            ("comment", comment),
            ("generationRequestId", generation_request_id),
        ):
            if value is not None:
                item[key] = value
        items = [item]
    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    with api() as client:
        for start in range(0, len(items), FEEDBACK_BATCH):
            chunk = items[start : start + FEEDBACK_BATCH]
            try:
                answer = client.submit_feedback(chunk).model_dump(mode="json", by_alias=True)
            except ModelregError as exc:
                if exc.status != 422 or "rejected" not in exc.problem or file is None:
                    raise
                answer = {"kept": exc.problem.get("kept", []), "rejected": exc.problem["rejected"]}
            kept += [{**k, "index": k["index"] + start} for k in answer["kept"]]
            rejected += [{**r, "index": r["index"] + start} for r in answer["rejected"]]
    if as_json:
        _emit_json({"kept": kept, "rejected": rejected})
    else:
        out.print(f"kept {len(kept)}, rejected {len(rejected)}")
        if rejected:
            _table(
                "Rejected",
                ("item", "reason"),
                [(str(r["index"] + 1), r["reason"]) for r in rejected],
            )
    if not kept:
        raise typer.Exit(1)


def _share(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _interval(low: float | None, high: float | None) -> str:
    return "" if low is None or high is None else f"{100 * low:.1f}-{100 * high:.1f}%"


@feedback_app.command("summary")
def feedback_summary(
    model: str,
    version: str,
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Count, mean rating, share of ratings >= 4 (Wilson 95% interval) and a histogram."""
    from rich.bar import Bar

    with api() as client:
        summary = client.feedback_summary(model, version, since=since, until=until)
    if as_json:
        _emit_json(summary)
        return
    mean = "" if summary.mean is None else f"{summary.mean:.2f}"
    out.print(
        f"[bold]{model} {version}[/]: {summary.count} items, {summary.rated} rated, "
        f"mean {mean or 'n/a'}, rated >= 4: {_share(summary.positive_share) or 'n/a'}"
        + (
            f" (95% CI {_interval(summary.positive_low, summary.positive_high)})"
            if summary.positive_share is not None
            else ""
        ),
        highlight=False,
    )
    if summary.since or summary.until:
        out.print(f"window: {_when(summary.since) or '…'} to {_when(summary.until) or 'now'}")
    top = max(summary.distribution.values(), default=0) or 1
    table = Table(show_header=False, box=None, title="Ratings", title_justify="left")
    table.add_column(justify="right")
    table.add_column(width=40)
    table.add_column(justify="right")
    table.add_column(justify="right")
    for star in ("5", "4", "3", "2", "1"):
        n = summary.distribution.get(star, 0)
        share = n / summary.rated if summary.rated else 0.0
        colour = "green" if star in ("4", "5") else "yellow" if star == "3" else "red"
        table.add_row(
            f"{star}★", Bar(top, 0, n, width=40, color=colour), str(n), f"{100 * share:.0f}%"
        )
    out.print(table)


@feedback_app.command("compare")
def feedback_compare(
    model: str,
    env: Annotated[str, typer.Option("--env", help="Environment")] = "production",
    as_json: JsonOpt = False,
) -> None:
    """The versions serving now, side by side, over the current rollout window."""
    with api() as client:
        comparison = client.compare_feedback(model, env)
    if as_json:
        _emit_json(comparison)
        return
    start = _when(comparison.window_start) or "the beginning"
    _table(
        f"{model} in {env}: feedback since {start} ({comparison.window_source})",
        ("version", "role", "weight", "items", "rated", "mean", "rated >= 4", "95% CI"),
        [
            (
                v.version_number,
                v.role,
                f"{v.weight}%",
                str(v.summary.count),
                str(v.summary.rated),
                "" if v.summary.mean is None else f"{v.summary.mean:.2f}",
                _share(v.summary.positive_share),
                _interval(v.summary.positive_low, v.summary.positive_high),
            )
            for v in comparison.versions
        ],
    )


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
