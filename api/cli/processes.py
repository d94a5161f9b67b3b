"""The long-running processes ``modelreg`` starts: the API server, the validation worker,
the rollout controller, and a model server with its initContainer, ``fetch-artifact``.

This is the composition root: ``controller`` starts the controller, the one place the API
package may wire it in; ``serve`` runs it (and the worker, and the API) as child processes
(``api.supervisor``).
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Annotated

import typer

from api.cli.context import configure_logging, load_settings
from api.cli.output import err, fail
from api.cli.serving_record import (
    announce_credentials,
    forget_serving,
    record_serving,
)


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [default: MODELREG_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: MODELREG_PORT]")] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="API processes serving the one port")
    ] = 1,
) -> None:
    """Run the API (http://127.0.0.1:8000, docs at /docs) on the configured database and store,
    with the validation worker and the controller, each in a process of its own.

    On the embedded SQLite default, migrations are applied at start. Once the port is bound,
    the CLI's credentials file gets this server's URL, and on the first start an admin API key,
    printed once. Ctrl-C or SIGTERM stops every process it started; model servers the
    controller started keep running after it stops. If one of its processes dies, it stops the
    others and exits 1.
    """
    from api.supervisor import (
        KUBE_NAMES,
        MULTIPROCESS_DIR,
        Supervisor,
        child_environment,
        forget_metrics,
        metrics_directory,
        stop_on_signals,
    )
    from registry import migrate
    from registry.services import build_registry

    settings = load_settings()
    if host:
        settings.host = host
    if port:
        settings.port = port
    configure_logging(settings.log_level)
    log = logging.getLogger("modelreg.serve")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.should_auto_migrate:
        migrate.upgrade(settings.database_url)
    registry = build_registry(settings)
    try:
        head = migrate.head_revision(settings.database_url)
        current = migrate.current_revision(registry.engine)
        if current != head:
            fail(
                f"the database is at revision {current or '(empty)'}, the code needs {head}: "
                "run `modelreg db upgrade` first"
            )
        log.info(
            "database %s, artifacts %s",
            registry.engine.url.render_as_string(),
            registry.store.describe(),
        )
        try:
            listener = _listen(settings.host, settings.port)
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc.strerror)
            raise SystemExit(3) from None  # as uvicorn.run
        settings.port = int(listener.getsockname()[1])
        log.info("API on http://%s:%d (docs at /docs)", settings.host, settings.port)
        record_serving(settings)
        if settings.bootstrap_admin:
            announce_credentials(settings, registry.keys.bootstrap_admin())
    finally:
        registry.close()

    stop = stop_on_signals()
    supervisor = Supervisor()
    died = None
    where = {"MODELREG_HOST": settings.host, "MODELREG_PORT": str(settings.port)}
    with metrics_directory() as shared:
        try:
            # The API processes and the worker count into one sum, which /metrics reports.
            env = child_environment({**where, MULTIPROCESS_DIR: str(shared)})
            fd = listener.fileno()
            for n in range(1, workers + 1):
                name = "API process" if workers == 1 else f"API process {n}/{workers}"
                supervisor.start(name, "api.server", ["--fd", str(fd)], env=env)
            listener.close()  # the API processes hold it
            if settings.worker_enabled:
                supervisor.start("validation worker", "api.cli", ["worker"], env=env)
            if settings.controller_enabled:
                # Not in the sum: the controller serves its own metrics, on a port of its own.
                kube = child_environment(where, extra_names=KUBE_NAMES)
                supervisor.start("controller", "api.cli", ["controller"], env=kube)
            died = supervisor.watch(stop)
            if died is not None:
                forget_metrics(shared, died.process.pid)
                log.error(
                    "the %s (pid %d) exited with code %s: stopping everything",
                    died.name,
                    died.process.pid,
                    died.process.exit.code if died.process.exit else "?",
                )
        finally:
            supervisor.stop_all()
    if died is not None:
        raise SystemExit(1)
    forget_serving(settings)


def _listen(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound here so that every API process shares it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def worker() -> None:
    """Run the validation worker alone (``modelreg serve`` runs one too)."""
    import signal
    import threading

    from registry.services import build_registry
    from validators.worker import ValidationWorker

    settings = load_settings()
    configure_logging(settings.log_level)
    registry = build_registry(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        ValidationWorker(registry).run_forever(stop)
    finally:
        registry.close()


def controller() -> None:
    """Run the rollout controller alone, until SIGTERM or Ctrl-C.

    ``modelreg serve`` runs one too. Several controllers may share a database: a lease makes
    exactly one act.
    """
    import signal
    import threading

    from controller.runner import start_controller
    from registry.services import build_registry

    settings = load_settings()
    configure_logging(settings.log_level)
    registry = build_registry(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        if settings.controller_metrics_port:
            from api.metrics import serve_metrics

            log = logging.getLogger("modelreg.controller")
            where = f"http://{settings.host}:{settings.controller_metrics_port}/metrics"
            try:
                serve_metrics(registry, host=settings.host, port=settings.controller_metrics_port)
                log.info("metrics on %s", where)
            except OSError as exc:  # another controller has the port: still control
                log.warning("cannot serve metrics on %s (%s): running without", where, exc.strerror)
        runner = start_controller(registry)
        try:
            stop.wait()
        finally:
            runner.stop()
    finally:
        registry.close()


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
    settings = load_settings()
    configure_logging(settings.log_level)
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
    settings = load_settings()
    configure_logging(settings.log_level)
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
