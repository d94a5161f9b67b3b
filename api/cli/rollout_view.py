"""How a rollout looks on the terminal: its step, status, holds, events and endpoints, and the
live view ``deploy --wait`` and ``deployments watch`` follow it with."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from api.cli.output import format_time, out
from modelreg_client.vocabulary import ROLLING_OUT, SETTLED, DeploymentStatus

if TYPE_CHECKING:
    from modelreg_client.client import Client
    from modelreg_client.schemas import DeploymentEventOut, DeploymentOut


def describe_step(dep: DeploymentOut) -> str:
    count = dep.progress.step_count
    if not count:
        return ""
    if dep.status == DeploymentStatus.ACTIVE:
        return f"{count}/{count}"
    return f"{min(dep.progress.step_index + 1, count)}/{count}"


def style_status(status: str) -> str:
    styles: dict[str, str] = {
        DeploymentStatus.ACTIVE: "green",
        DeploymentStatus.FAILED: "red",
        DeploymentStatus.ROLLED_BACK: "red",
        DeploymentStatus.INACTIVE: "dim",
    }
    style = styles.get(status, "yellow")
    return f"[{style}]{status}[/]"


def describe_hold(dep: DeploymentOut) -> str | None:
    """Why a rollout holds its step (e.g. "waiting for traffic: 3 of 20 requests"), from its
    Progressing condition; None when it does not hold."""
    if dep.progress.hold_since is None or dep.status not in ROLLING_OUT:
        return None
    for c in dep.conditions:
        if c.get("type") == "Progressing" and c.get("message"):
            return str(c["message"])
    return None


def condition_rows(dep: DeploymentOut) -> list[tuple[str, ...]]:
    return [
        (
            str(c.get("type", "")),
            str(c.get("status", "")),
            str(c.get("reason", "")),
            str(c.get("message", "")),
        )
        for c in dep.conditions
    ]


def event_rows(events: list[DeploymentEventOut]) -> list[tuple[str, ...]]:
    return [
        (
            str(e.id),
            format_time(e.at),
            e.kind,
            e.version_number or "",
            e.actor_email or e.actor,
            e.reason or "",
        )
        for e in events
    ]


EVENT_COLUMNS = ("#", "at", "kind", "version", "actor", "reason")


def endpoint_rows(answer: dict[str, Any]) -> list[tuple[str, ...]]:
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


def print_created(dep: DeploymentOut) -> None:
    out.print(
        f"deployment [bold]{dep.id}[/] {style_status(dep.status)}: {dep.model} "
        f"{dep.version_number} to {dep.environment} ({dep.deployment_strategy})"
    )
    out.print(f"follow it with: modelreg deployments watch {dep.id}", highlight=False)


def _watch_view(
    dep: DeploymentOut, endpoints: dict[str, Any] | None, events: list[DeploymentEventOut]
) -> Any:
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = []
    step = describe_step(dep)
    head = (
        f"[bold]{dep.model} {dep.version_number}[/] → {dep.environment} "
        f"({dep.deployment_strategy}): {style_status(dep.status)}"
    )
    if step:
        head += f", step {step}"
    head += f", candidate weight {dep.progress.traffic_weight}%"
    if dep.progress.paused:
        head += " [yellow](paused)[/]"
    parts.append(Text.from_markup(head))
    holding = describe_hold(dep)
    if holding:
        parts.append(Text(f"holding: {holding}", style="yellow"))
    if endpoints is None:
        parts.append(Text("endpoints: nothing serves yet"))
    else:
        table = Table(title="endpoints", title_justify="left")
        for column in ENDPOINT_COLUMNS[:4]:
            table.add_column(column, overflow="fold")
        for row in endpoint_rows(endpoints):
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
        for row in event_rows(events[-8:]):
            table.add_row(*row)
        parts.append(table)
    return Group(*parts)


def follow_rollout(client: Client, deployment_id: str, *, interval: float) -> DeploymentOut:
    """A live view of the rollout, refreshed until it settles (see ``SETTLED``)."""
    import time

    from rich.live import Live

    from modelreg_client.client import ModelregError

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
        while dep.status not in SETTLED:
            time.sleep(interval)
            dep, view = snapshot()
            live.update(view, refresh=True)
    if not out.is_terminal:
        out.line()  # Live ends a redirected render without one
    return dep


def observed_instance_rows(dep: DeploymentOut) -> list[tuple[str, ...]]:
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
