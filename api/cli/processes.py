"""The long-running processes ``modelreg`` starts: the API server, the validation worker,
the rollout controller, and a model server with its initContainer, ``fetch-artifact``.

This is the composition root: ``serve`` and ``controller`` start the controller, the one
place the API package may wire it in.
"""

from __future__ import annotations

import logging
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
) -> None:
    """Run the API (http://127.0.0.1:8000, docs at /docs) on the configured database and store.

    On the embedded SQLite default, migrations are applied at start. Once the port is bound,
    the CLI's credentials file gets this server's URL, and on the first start an admin API key,
    printed once. Model servers it started keep running after it stops.
    """
    import signal

    from api.app import create_app
    from api.server import BoundServer, uvicorn_config
    from registry import migrate

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
    application = create_app(settings)
    registry = application.state.registry
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
    if settings.worker_enabled:
        from validators.worker import start_worker_thread

        worker_thread, stop_worker = start_worker_thread(registry)
    if settings.controller_enabled:
        from controller.runner import start_controller

        controller_runner = start_controller(registry)

    def bound(bound_port: int) -> None:
        settings.port = bound_port
        log.info("API on http://%s:%d (docs at /docs)", settings.host, bound_port)
        record_serving(settings)
        if settings.bootstrap_admin:
            announce_credentials(settings, registry.keys.bootstrap_admin())

    # uvicorn handles SIGTERM while it runs, then raises it again once it has stopped: with
    # the default action that kills the process before the worker and the controller stop
    # (and before the controller says which model servers keep running). A handler of our own
    # is what uvicorn restores and re-raises into, so the clean-up below runs.
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server = BoundServer(uvicorn_config(application, settings), on_bound=bound)
        server.run()
        if not server.started:  # the port is taken, say: as uvicorn.run, exit 3
            raise SystemExit(3)
        forget_serving(settings)
    finally:
        if settings.controller_enabled:
            controller_runner.stop()
        if settings.worker_enabled:
            stop_worker.set()
            worker_thread.join(timeout=10)


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
