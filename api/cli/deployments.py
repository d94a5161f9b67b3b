"""``modelreg deploy``, ``rollback``, ``history`` and ``endpoint``, and ``modelreg
deployments``: roll versions out, follow and steer rollouts, see what serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from api.cli.choices import listed, one_of
from api.cli.context import open_client
from api.cli.output import JsonOpt, emit_json, fail, format_time, out, print_table, short_ids
from api.cli.rollout_view import (
    ENDPOINT_COLUMNS,
    EVENT_COLUMNS,
    condition_rows,
    describe_hold,
    describe_step,
    endpoint_rows,
    event_rows,
    follow_rollout,
    observed_instance_rows,
    print_created,
    style_status,
)
from modelreg_client.vocabulary import (
    SETTLED,
    DeploymentStatus,
    DeploymentTarget,
    Environment,
    Strategy,
)

if TYPE_CHECKING:
    from modelreg_client.schemas import DeploymentOut

deployments_app = typer.Typer(
    help="Rollouts: list, inspect, follow and steer deployments.", no_args_is_help=True
)

EnvOpt = Annotated[
    str,
    typer.Option("--env", callback=one_of(Environment), help=f"Environment: {listed(Environment)}"),
]
ReasonOpt = Annotated[str | None, typer.Option(help="Why; kept in the deployment's ledger")]
IntervalOpt = Annotated[float, typer.Option(help="Seconds between refreshes", min=0.05)]
IdArg = Annotated[
    str,
    typer.Argument(
        metavar="ID", help="The deployment id, or its first 8 or more characters (as listed)"
    ),
]


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
    if strategy == Strategy.CANARY:
        if steps is not None or pause is not None:
            params["steps"] = _canary_steps(steps, pause)
    elif steps is not None:
        fail(f"--steps is for the canary strategy, not {strategy}")
    elif pause is not None:
        if strategy != Strategy.ROLLING_UPDATE:
            fail(f"--pause is for the canary and rolling_update strategies, not {strategy}")
        params["pause"] = pause
    if strategy != Strategy.BLUE_GREEN and (
        preview_duration is not None or auto_promote is not None
    ):
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


def _exit_for(dep: DeploymentOut) -> None:
    """Exit 1 unless the rollout ended Active."""
    if dep.status != DeploymentStatus.ACTIVE:
        raise typer.Exit(1)


def deploy(
    model: str,
    version: str,
    env: EnvOpt = Environment.PRODUCTION,
    strategy: Annotated[
        str, typer.Option(callback=one_of(Strategy), help=f"One of {listed(Strategy)}")
    ] = Strategy.CANARY,
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
    target: Annotated[
        str,
        typer.Option(callback=one_of(DeploymentTarget), help=f"One of {listed(DeploymentTarget)}"),
    ] = DeploymentTarget.LOCAL,
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
    with open_client() as client:
        dep = client.deploy(
            model,
            version,
            environment=env,
            strategy=strategy,
            params=strategy_params,
            target=target,
        )
        if as_json and not wait:
            emit_json(dep)
            return
        if not as_json:
            print_created(dep)
        if not wait:
            return
        if as_json:
            import time

            while dep.status not in SETTLED:
                time.sleep(interval)
                dep = client.deployment(str(dep.id))
        else:
            dep = follow_rollout(client, str(dep.id), interval=interval)
    if as_json:
        emit_json(dep)
    else:
        out.print(f"deployment {dep.id} ended {style_status(dep.status)}")
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
    with open_client() as client:
        items = client.deployments(model=model, environment=env, status=status, limit=limit).items
    if as_json:
        emit_json(items)
        return
    print_table(
        f"{len(items)} deployment(s)",
        ("id", "model", "version", "env", "strategy", "status", "step", "weight", "created"),
        [
            (
                short,
                d.model,
                d.version_number,
                d.environment,
                d.deployment_strategy,
                d.status,
                describe_step(d),
                f"{d.progress.traffic_weight}%",
                format_time(d.created_at),
            )
            for short, d in zip(short_ids([str(d.id) for d in items]), items, strict=True)
        ],
        optional=("created", "strategy"),
    )


@deployments_app.command("show")
def deployments_show(deployment_id: IdArg, as_json: JsonOpt = False) -> None:
    """Show a deployment: status, progress, conditions, endpoint and observed servers."""
    with open_client() as client:
        dep = client.deployment(deployment_id)
    if as_json:
        emit_json(dep)
        return
    table = Table(title=f"deployment {dep.id}", show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column(overflow="fold")
    progress = dep.progress
    rows = [
        ("model", f"{dep.model} {dep.version_number}"),
        ("environment", dep.environment),
        ("status", style_status(dep.status) + (" (paused)" if progress.paused else "")),
        ("strategy", f"{dep.deployment_strategy} {json.dumps(dep.strategy_params)}"),
        ("target", dep.target),
        ("step", describe_step(dep)),
        ("weight", f"{progress.traffic_weight}%"),
        ("step started", format_time(progress.step_started_at)),
        ("holding since", format_time(progress.hold_since)),
        ("holding", describe_hold(dep) or ""),
        ("endpoint", dep.endpoint or ""),
        ("stable", str(dep.stable_deployment_id or "")),
        ("requested", json.dumps(dep.requested_action) if dep.requested_action else ""),
        ("created", format_time(dep.created_at)),
        ("finished", format_time(dep.finished_at)),
    ]
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)
    if dep.conditions:
        print_table("conditions", ("type", "status", "reason", "message"), condition_rows(dep))
    instances = observed_instance_rows(dep)
    if instances:
        print_table("observed instances", ("version", "url", "ready", "pid"), instances)


@deployments_app.command("events")
def deployments_events(deployment_id: IdArg, as_json: JsonOpt = False) -> None:
    """A deployment's ledger: steps, verdicts, promotions, aborts and rollbacks."""
    with open_client() as client:
        events = client.deployment_events(deployment_id)
    if as_json:
        emit_json(events)
        return
    dep_id = events[0].deployment_id if events else deployment_id
    print_table(f"{len(events)} event(s) of {dep_id}", EVENT_COLUMNS, event_rows(events))


@deployments_app.command("watch")
def deployments_watch(deployment_id: IdArg, interval: IntervalOpt = 1.0) -> None:
    """Follow a rollout live until it ends: exit 0 if it ends Active, 1 otherwise."""
    with open_client() as client:
        # The full id, once: a deployment created meanwhile cannot make a prefix ambiguous.
        dep_id = str(client.deployment(deployment_id).id)
        dep = follow_rollout(client, dep_id, interval=interval)
    out.print(f"deployment {dep.id} is {style_status(dep.status)}")
    _exit_for(dep)


def _action(action: str, deployment_id: str, reason: str | None) -> None:
    with open_client() as client:
        dep = client.deployment_action(deployment_id, action, reason)
    out.print(
        f"{action} requested for deployment {dep.id} ({dep.model} {dep.version_number}, "
        f"{style_status(dep.status)}); the controller carries it out on its next pass"
    )


@deployments_app.command("promote")
def deployments_promote(deployment_id: IdArg, reason: ReasonOpt = None) -> None:
    """Complete the remaining steps now: all traffic to the candidate."""
    _action("promote", deployment_id, reason)


@deployments_app.command("pause")
def deployments_pause(deployment_id: IdArg, reason: ReasonOpt = None) -> None:
    """Hold the rollout at its current step (a failed verdict still rolls back)."""
    _action("pause", deployment_id, reason)


@deployments_app.command("resume")
def deployments_resume(deployment_id: IdArg, reason: ReasonOpt = None) -> None:
    """Let a paused rollout go on."""
    _action("resume", deployment_id, reason)


@deployments_app.command("abort")
def deployments_abort(deployment_id: IdArg, reason: ReasonOpt = None) -> None:
    """All traffic back to the stable version; the candidate stops (RolledBack)."""
    _action("abort", deployment_id, reason)


@deployments_app.command("undeploy")
def deployments_undeploy(deployment_id: IdArg, reason: ReasonOpt = None) -> None:
    """Take an Active deployment out of service (Inactive); its servers stop."""
    _action("undeploy", deployment_id, reason)


def rollback(
    model: str,
    env: EnvOpt = Environment.PRODUCTION,
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Serve the previous Active version of MODEL again (instant while its servers are up)."""
    with open_client() as client:
        dep = client.rollback(model, env, reason)
    if as_json:
        emit_json(dep)
        return
    out.print(
        f"rolling {model} in {env} back to {dep.version_number}: deployment {dep.id} "
        f"{style_status(dep.status)}"
    )
    out.print(f"follow it with: modelreg deployments watch {dep.id}", highlight=False)


def history(
    model: str,
    env: EnvOpt = Environment.PRODUCTION,
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
    with open_client() as client:
        result = client.history(model, env, at=at)
    if as_json:
        emit_json(result)
        return
    print_table(
        f"{model} in {env}: {len(result.events)} event(s)",
        EVENT_COLUMNS,
        event_rows(result.events),
    )
    if result.serving_at is not None:
        print_table(
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


def endpoint(
    model: str,
    env: EnvOpt = Environment.PRODUCTION,
    key: Annotated[
        str | None, typer.Option(help="A user or session id: makes the pick sticky")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The endpoints serving MODEL now, with their weights, and the one picked."""
    with open_client() as client:
        answer = client.endpoint(model, env, key)
    if as_json:
        emit_json(answer)
        return
    print_table(
        f"{model} in {env} (generation {answer.get('generation')})",
        ENDPOINT_COLUMNS,
        endpoint_rows(answer),
    )
    selected = answer.get("selected")
    if selected:
        out.print(
            f"selected: {selected.get('versionNumber')} at {selected.get('url')}", highlight=False
        )
    else:
        out.print("selected: none (every endpoint has weight 0)")


# -- keys -----------------------------------------------------------------------------------
