"""PostgreSQL stopped mid-load, then started again, under a real ``modelreg serve``.

A private cluster (``tests/support/pgcluster.py``) is stopped the way a crash stops it
(``pg_ctl stop -m immediate``) while threads drive mixed load: endpoint resolutions, feedback,
version creation with artifact uploads, reads, and a canary rollout in flight. Then:

* while it is down, every request is answered, promptly (a generous per-request timeout tells
  an answer from a hang; nothing here measures speed): 503 ``application/problem+json`` with
  ``Retry-After``, or, for endpoint resolution, the last answer known (200); ``/readyz`` says
  the database is down;
* after it is back, without restarting modelreg: the API answers again, a version uploaded
  after the recovery is validated by the worker, every upload that was queued is validated,
  and the rollout that was in flight reaches Active;
* no request was half-applied: every version with an artifact has its object in the store,
  and an object without a version is an orphan that ``modelreg gc --older-than 0s`` removes,
  and it removes nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from registry import migrate
from registry.db import DB_UNAVAILABLE_ERRORS, create_db_engine
from registry.models import AIModelVersion, ArtifactUpload, ValidationRequest
from registry.services import build_registry
from registry.settings import Settings
from registry.storage import create_store
from registry.types import utcnow
from tests.support.live import Modelreg, wait_for
from tests.support.onnx_models import add_model
from tests.support.pgcluster import PgCluster

pytestmark = pytest.mark.slow

MODEL = "outage"
LOAD_MODEL = "outage-load"
#: Longer than any answer can take with a reachable or a refused database (the engine's
#: connect_timeout is 5 s): a request without an answer by then hangs.
HANG = 30.0
PROBLEM = "application/problem+json"


@dataclass
class Outcome:
    kind: str
    phase: str
    status: int | None  # None: no HTTP answer (the error is in ``error``)
    content_type: str = ""
    retry_after: str | None = None
    seconds: float = 0.0
    error: str = ""


@dataclass
class Load:
    """Threads that call the API until stopped; each call is recorded with the phase it
    started in (``up``, ``down``, ``back``)."""

    mr: Modelreg
    token: str
    phase: str = "up"
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: Iterator[int] = field(default_factory=itertools.count)

    def call(self, http: httpx.Client, kind: str, method: str, url: str, **kw: Any) -> int | None:
        phase = self.phase
        started = time.monotonic()
        try:
            response = http.request(method, url, **kw)
        except httpx.TransportError as exc:
            outcome = Outcome(
                kind, phase, None, seconds=time.monotonic() - started, error=repr(exc)
            )
        else:
            outcome = Outcome(
                kind,
                phase,
                response.status_code,
                response.headers.get("content-type", ""),
                response.headers.get("retry-after"),
                time.monotonic() - started,
                response.text[:300] if response.status_code >= 300 else "",
            )
        with self.lock:
            self.outcomes.append(outcome)
        return outcome.status

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.mr.url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=HANG,
        )

    def resolver(self) -> None:
        with self.client() as http:
            for i in itertools.count():
                if self.stop.wait(0.02):
                    return
                self.call(
                    http,
                    "resolve",
                    "GET",
                    f"/api/v1/models/{MODEL}/endpoint",
                    params={"environment": "production", "key": f"user-{i}"},
                )

    def feedback(self) -> None:
        with self.client() as http:
            while not self.stop.wait(0.05):
                self.call(
                    http,
                    "feedback",
                    "POST",
                    "/api/v1/feedback",
                    json={"model": MODEL, "versionNumber": "1.0", "rating": 4},
                )

    def reader(self) -> None:
        paths = [
            f"/api/v1/models/{MODEL}",
            f"/api/v1/models/{MODEL}/versions",
            f"/api/v1/models/{MODEL}/versions/1.0",
            "/api/v1/deployments",
        ]
        with self.client() as http:
            for path in itertools.cycle(paths):
                if self.stop.wait(0.05):
                    return
                self.call(http, "read", "GET", path)

    def writer(self) -> None:
        """Creates versions of LOAD_MODEL and uploads their artifacts (small and valid, so
        that the worker gets through them quickly)."""
        artifact = add_model(constant=3.0)
        with self.client() as http:
            while not self.stop.wait(1.0):  # each upload costs the worker a validation
                number = f"9.{next(self.counter)}"
                created = self.call(
                    http,
                    "create",
                    "POST",
                    f"/api/v1/models/{LOAD_MODEL}/versions",
                    json={"versionNumber": number},
                )
                if created != 201:
                    continue
                self.call(
                    http,
                    "upload",
                    "PUT",
                    f"/api/v1/models/{LOAD_MODEL}/versions/{number}/artifact",
                    content=artifact,
                    params={"filename": "model.onnx"},
                )

    def start(self) -> None:
        for target in (self.resolver, self.feedback, self.reader, self.writer):
            thread = threading.Thread(target=target, name=target.__name__, daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=HANG + 10)
            assert not thread.is_alive(), f"load thread {thread.name} is stuck"

    def summary(self) -> str:
        """Answers per phase, kind and status, and the longest wait: shown when a test fails."""
        with self.lock:
            outcomes = list(self.outcomes)
        counts: dict[tuple[str, str, int | None], int] = {}
        for o in outcomes:
            counts[(o.phase, o.kind, o.status)] = counts.get((o.phase, o.kind, o.status), 0) + 1
        longest = max((o.seconds for o in outcomes), default=0.0)
        lines = [f"{p:5} {k:8} {st}: {n}" for (p, k, st), n in sorted(counts.items(), key=str)]
        return "\n".join([*lines, f"longest answer: {longest:.2f} s"])

    def of(self, phase: str, *kinds: str) -> list[Outcome]:
        with self.lock:
            return [o for o in self.outcomes if o.phase == phase and (not kinds or o.kind in kinds)]


@pytest.fixture
def modelreg(tmp_path: Path, cluster: PgCluster) -> Iterator[Modelreg]:
    migrate.upgrade(cluster.url)
    mr = Modelreg(
        tmp_path,
        env={
            "MODELREG_DATABASE_URL": cluster.url,
            # A run the worker claimed before the outage and could not finish is taken over
            # when its lease expires: keep that short.
            "MODELREG_VALIDATION_LEASE_SECONDS": "6",
            # Tokens are re-checked against the database after this: a short outage then
            # outlasts the token cache, as a long one would.
            "MODELREG_AUTH_CACHE_SECONDS": "1",
        },
    ).start()
    try:
        yield mr
    finally:
        mr.stop()
        mr.kill_servers()


def _token(mr: Modelreg) -> str:
    return (mr.home / "credentials").read_text().split("token = ")[1].strip()


def _problem(outcome: Outcome) -> bool:
    return (
        outcome.status == 503
        and outcome.content_type.startswith(PROBLEM)
        and outcome.retry_after is not None
        and outcome.retry_after.isdigit()
    )


def test_postgres_stopped_mid_load_and_started_again(
    modelreg: Modelreg, cluster: PgCluster
) -> None:
    mr = modelreg
    # -- before: a model served by 1.0, a validated 1.1 to roll out, a model for the load ----
    mr.version(MODEL, "1.0", add_model(constant=1.0))
    mr.version(MODEL, "1.1", add_model(constant=2.0))
    created = mr.api.post(
        "/api/v1/models",
        json={"name": LOAD_MODEL, "taskType": "ImageGeneration", "provider": "Internal"},
    )
    assert created.status_code == 201, created.text
    for number in ("1.0", "1.1"):
        run = mr.validated(MODEL, number)
        assert run["result"]["functionalStatus"] == "Passed", run
    first = mr.deploy(MODEL, "1.0")
    assert mr.until_status(first["id"], "Active")["status"] == "Active"
    assert mr.resolve(MODEL) is not None

    load = Load(mr, _token(mr))
    load.start()
    # A rollout in flight when the database goes: half the traffic on 1.1, then all of it.
    canary = mr.deploy(
        MODEL,
        "1.1",
        strategyParams={
            "steps": [{"weight": 50, "pause": "8s"}, {"weight": 100}],
            "analysis": {"requireTraffic": False},  # the load resolves, it does not infer
        },
    )
    mr.until_weights(MODEL, {"1.0": 50, "1.1": 50})
    wait_for(lambda: len(load.of("up", "upload")) >= 2 or None, what="uploads before the outage")

    # -- down --------------------------------------------------------------------------------
    load.phase = "down"
    cluster.stop("immediate")
    with httpx.Client(
        base_url=mr.url, headers={"Authorization": f"Bearer {load.token}"}, timeout=HANG
    ) as http:
        ready = wait_for(
            lambda: ((r := http.get("/readyz")).status_code == 503 and r) or None,
            what="/readyz to report the database down",
        )
        assert ready.json()["checks"]["database"].startswith("unavailable"), ready.text
        assert ready.json()["checks"]["store"] == "ok", ready.text
        # Longer than the API's token cache: endpoint resolution must keep answering from what
        # it knew, other requests must keep getting 503, not hang.
        time.sleep(3)
        probe = http.get(f"/api/v1/models/{MODEL}/versions/1.0")
        assert probe.status_code == 503, probe.text
        assert probe.headers["content-type"].startswith(PROBLEM)
        assert probe.headers["retry-after"].isdigit()
        assert probe.json()["status"] == 503
        resolved = http.get(f"/api/v1/models/{MODEL}/endpoint")
        assert resolved.status_code == 200, resolved.text
        assert {e["versionNumber"] for e in resolved.json()["endpoints"]} <= {"1.0", "1.1"}
        # A model this process never resolved has no last answer to serve.
        unknown = http.get(f"/api/v1/models/{LOAD_MODEL}/endpoint")
        assert unknown.status_code == 503, unknown.text
        assert unknown.headers["content-type"].startswith(PROBLEM)
        assert unknown.headers["retry-after"].isdigit()
        # The metrics still answer: the 503s are counted, the database gauges are skipped.
        scraped = http.get("/metrics")
        assert scraped.status_code == 200, scraped.text
        assert 'status="503"' in scraped.text

    # -- back --------------------------------------------------------------------------------
    cluster.start()
    load.phase = "back"
    wait_for(
        lambda: mr.api.get(f"/api/v1/models/{MODEL}").status_code == 200 or None,
        what="the API to answer again",
    )
    wait_for(lambda: http_ok(mr, "/readyz") or None, what="/readyz to report ready again")
    # Every kind of request succeeds again.
    wait_for(
        lambda: (
            all(
                any(o.status is not None and o.status < 300 for o in load.of("back", kind))
                for kind in ("resolve", "feedback", "read", "create", "upload")
            )
            or None
        ),
        what="every kind of request to succeed after the recovery",
        timeout=60,
    )
    load.finish()
    # The controller carries the rollout that was in flight through to the end.
    done = mr.until_status(canary["id"], "Active", "RolledBack", "Failed", timeout=120)
    assert done["status"] == "Active", done
    mr.until_weights(MODEL, {"1.1": 100})
    # The worker validates a version uploaded now.
    mr.version(MODEL, "1.2", add_model(constant=4.0))
    run = mr.validated(MODEL, "1.2")
    assert run["result"]["functionalStatus"] == "Passed", run

    # -- every answer while it was down ------------------------------------------------------
    print(load.summary())  # pytest shows it when an assertion below fails
    hung = [o for o in load.outcomes if o.status is None]
    assert not hung, hung[:5]
    errors = [o for o in load.outcomes if o.status is not None and o.status >= 500]
    assert all(_problem(o) for o in errors), [o for o in errors if not _problem(o)][:5]
    down = load.of("down")
    assert any(o.status == 503 for o in down), "no request met the outage"
    assert all(o.status == 200 for o in load.of("down", "resolve")), [
        o for o in load.of("down", "resolve") if o.status != 200
    ][:5]
    for kind in ("feedback", "read", "create"):
        assert any(o.status == 503 for o in load.of("down", kind)), kind
    expected = {"resolve": {200}, "feedback": {200}, "read": {200}, "create": {201, 503}}
    expected["upload"] = {201, 503}
    unexpected = [o for o in load.outcomes if o.status not in expected[o.kind] | {503}]
    assert not unexpected, unexpected[:5]

    # -- no request half-applied ------------------------------------------------------------
    _check_consistency(mr, cluster)

    # -- what the log says -------------------------------------------------------------------
    log = (mr.home / "serve.log").read_text(errors="replace")
    # The API reports the outage, not every 503 (one line, then one every 30 s at most); the
    # worker and the controller say once that they wait, and once that they resume.
    assert 1 <= log.count("database unavailable during") <= 3, log[-6000:]
    assert log.count("stands by and retries") == 1, log[-6000:]
    assert "the controller resumes" in log
    assert log.count("the validation worker waits for it") == 1, log[-6000:]
    assert "the validation worker resumes" in log
    assert log.count("Traceback") <= 3, log[-6000:]


def http_ok(mr: Modelreg, path: str) -> bool:
    return httpx.get(f"{mr.url}{path}", timeout=HANG).status_code == 200


def _check_consistency(mr: Modelreg, cluster: PgCluster) -> None:
    settings = Settings(data_dir=mr.home / "data", database_url=cluster.url)
    store = create_store(settings)
    engine = create_db_engine(cluster.url)
    try:
        # Every upload that was queued is validated, including those in flight at the stop.
        def validated_all() -> bool:
            with engine.connect() as conn:
                pending = conn.execute(
                    select(ValidationRequest.id).where(ValidationRequest.status != "Done")
                ).all()
            return not pending

        wait_for(validated_all, what="every queued validation to finish", timeout=180)
        with engine.connect() as conn:
            versions = {
                path
                for (path,) in conn.execute(
                    select(AIModelVersion.source_path).where(
                        AIModelVersion.source_path.is_not(None)
                    )
                )
            }
            leased = {
                key
                for (key,) in conn.execute(
                    select(ArtifactUpload.object_key).where(ArtifactUpload.expires_at > utcnow())
                )
            }
        objects = {o.key for o in store.list_objects("models/")}
        missing = versions - objects
        assert not missing, f"versions whose artifact is not in the store: {missing}"
        orphans = objects - versions
        result = subprocess.run(
            [sys.executable, "-m", "api.cli", "gc", "--older-than", "0s", "--json"],
            env=mr.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        after = {o.key for o in store.list_objects("models/")}
        removed = objects - after
        assert report["removed"] == len(removed), (report, removed)
        # GC removed orphans only, and every orphan but those a live upload lease still
        # names (an upload cut off by the outage keeps its lease until it expires).
        assert removed <= orphans, removed - orphans
        assert orphans - removed <= leased, orphans - removed
        assert versions <= after
    finally:
        engine.dispose()


def test_connect_timeout_bounds_a_silent_database() -> None:
    """A database host that accepts TCP connections but never answers (a hung server, a
    black-holed route) costs a bounded wait and an error the API maps to 503, not a hang."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        engine = create_db_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres")
        outcome: list[BaseException | None] = []

        def connect() -> None:
            try:
                with engine.connect():
                    pass
            except BaseException as exc:
                outcome.append(exc)
            else:
                outcome.append(None)

        thread = threading.Thread(target=connect, daemon=True)
        thread.start()
        thread.join(timeout=HANG)
        with contextlib.suppress(Exception):
            engine.dispose()
    assert outcome, "connecting to a silent database hung"
    assert isinstance(outcome[0], DB_UNAVAILABLE_ERRORS), outcome


class CommitCutter:
    """A TCP proxy in front of PostgreSQL that loses the answer to one COMMIT.

    Once a client has sent ``trigger`` (any bytes of a statement or of its parameters), the
    next ``COMMIT`` it sends is passed on, then the proxy closes both sides: the server has the
    COMMIT before the end of its stream, so it commits, but the client only sees its connection
    die, and cannot know whether the transaction was applied. Everything else is passed through.
    """

    def __init__(self, upstream_port: int, trigger: bytes) -> None:
        self.upstream_port = upstream_port
        self.trigger = trigger
        self.cut = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, name="commit-cutter", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            lost = threading.Event()  # set before the COMMIT goes on: no answer comes back
            threading.Thread(
                target=self._upstream, args=(client, server, lost), daemon=True
            ).start()
            threading.Thread(
                target=self._downstream, args=(server, client, lost), daemon=True
            ).start()

    def _upstream(
        self, client: socket.socket, server: socket.socket, lost: threading.Event
    ) -> None:
        armed = False
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                armed = armed or (self.trigger in data and not self.cut.is_set())
                if armed and b"COMMIT" in data:
                    lost.set()
                    self.cut.set()
                    server.sendall(data)
                    server.shutdown(socket.SHUT_WR)  # the COMMIT arrives, then end of stream
                    break
                server.sendall(data)
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _downstream(
        self, server: socket.socket, client: socket.socket, lost: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while (data := server.recv(65536)) and not lost.is_set():
                client.sendall(data)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def test_upload_whose_commit_is_lost_keeps_its_object(tmp_path: Path, cluster: PgCluster) -> None:
    """The connection dies under the COMMIT that records an artifact: the upload fails (503)
    although the row was written. The object must stay, or the version would name an object
    that is gone; had the COMMIT not happened, ``modelreg gc`` would remove it."""
    migrate.upgrade(cluster.url)
    cutter = CommitCutter(cluster.port, trigger=b"version_uploaded")
    proxied = cluster.url.replace(f":{cluster.port}/", f":{cutter.port}/")
    settings = Settings(data_dir=tmp_path / "data", database_url=proxied)
    registry = build_registry(settings)
    try:
        issued = registry.keys.bootstrap_admin()
        assert issued is not None
        actor = registry.keys.authenticate(issued.token)
        registry.models.create(actor, name=MODEL, provider="Internal", task_type="ImageGeneration")
        registry.versions.create(actor, MODEL, version_number="1.0")
        with pytest.raises(DB_UNAVAILABLE_ERRORS):
            registry.versions.upload(actor, MODEL, "1.0", [add_model(constant=1.0)])
        assert cutter.cut.is_set()
        version = registry.versions.get(MODEL, "1.0")  # a new connection, through the proxy
        assert version.source_path is not None, "the COMMIT was lost before the server saw it"
        assert version.source_path in {o.key for o in registry.store.list_objects("models/")}
        report = registry.gc.collect(older_than=timedelta(0), dry_run=False)
        assert report.removed == 0, report
        assert b"".join(registry.store.open_range(version.source_path)) == add_model(constant=1.0)
    finally:
        registry.close()
        cutter.close()


def test_a_wrapped_database_error_is_still_503() -> None:
    """A layer that wraps the driver's error (raise ... from, an exception group) does not
    turn an unreachable database into a 500."""
    from fastapi import FastAPI
    from sqlalchemy.exc import OperationalError

    from api.problems import install_problem_handlers

    app = FastAPI()
    install_problem_handlers(app)
    down = OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    @app.get("/chained")
    def chained() -> None:
        raise RuntimeError("could not load the thing") from down

    @app.get("/grouped")
    def grouped() -> None:
        raise ExceptionGroup("tasks failed", [ValueError("other"), down])

    @app.get("/plain")
    def plain() -> None:
        raise RuntimeError("a bug")

    async def fetch(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path)

    for path in ("/chained", "/grouped"):
        response = asyncio.run(fetch(path))
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith(PROBLEM)
        assert response.headers["retry-after"].isdigit()
    assert asyncio.run(fetch("/plain")).status_code == 500
