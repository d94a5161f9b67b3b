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
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
app.add_typer(versions_app, name="versions")
app.add_typer(keys_app, name="keys")

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
    try:
        uvicorn.run(
            application,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
        )
    finally:
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
    _emit_json(v) if as_json else _show(v, f"{model} {version}")


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
        Path | None, typer.Option("--artifact", help="A local ONNX file", dir_okay=False)
    ] = None,
    artifact_key: Annotated[
        str | None,
        typer.Option("--artifact-key", help="Key of the ONNX object in the configured store"),
    ] = None,
) -> None:
    """Serve one ONNX model over the Open Inference Protocol (KServe v2 REST) until SIGTERM.

    The artifact is hashed first (an --artifact-key is downloaded to a private temporary
    directory); if its SHA-256 is not --sha256, nothing is served and the exit code is 2.
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
            log_level=settings.log_level,
        )
    except ArtifactMismatch as exc:
        fail(str(exc), code=2)
    except ModelLoadError as exc:
        fail(str(exc))
    except (RegistryError, OSError) as exc:
        fail(f"cannot read the artifact: {exc}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
