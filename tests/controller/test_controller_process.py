"""``modelreg controller`` as a process of its own: it leads, passes, and exports metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.live import wait_for
from tests.support.ports import free_port


def test_standalone_controller_serves_its_metrics(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env.update(
        HOME=str(tmp_path),
        MODELREG_DATA_DIR=str(tmp_path / "data"),
        MODELREG_CONTROLLER_METRICS_PORT=str(port),
        MODELREG_CONTROLLER_INTERVAL_SECONDS="0.2",
    )
    upgrade = subprocess.run(
        [sys.executable, "-m", "api.cli", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert upgrade.returncode == 0, upgrade.stderr
    log = (tmp_path / "controller.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "controller"], env=env, stdout=log, stderr=log
    )
    log.close()
    try:

        def samples() -> dict[str, float] | None:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
            except httpx.TransportError:
                return None
            found = {
                s.name: s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
                if not s.labels or s.name == "modelreg_deployments"
            }
            return found if found.get("modelreg_controller_pass_duration_seconds_count") else None

        scraped = wait_for(samples, what="the controller's metrics", timeout=60)
        assert scraped["modelreg_controller_leader"] == 1
        assert "modelreg_validation_queue_depth" in scraped, "database gauges are there too"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0, (tmp_path / "controller.log").read_text()[-3000:]
    assert "stopped" in (tmp_path / "controller.log").read_text()
