"""The controller's command line: `run` (the loop), and what people do by hand.

    python -m rollout run                       # the control loop (the container's command)
    python -m rollout status                    # versions, stage, share, last decision
    python -m rollout promote|rollback|pause|resume MODEL VERSION
    python -m rollout init-config               # write the config if missing (make up)

Manual actions follow the loop's safety rules and are audited like its own decisions.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Annotated

import typer

from rollout.config import Settings
from rollout.controller import Controller, require_config
from rollout.errors import RolloutError
from rollout.model_config import ModelState

app = typer.Typer(
    add_completion=False, help="The rollout controller: `run` (the loop) and actions by hand."
)


def _controller() -> Controller:
    from rollout.service import build_controller

    return build_controller(Settings())


def _fail(error: RolloutError) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(error.exit_code)


@app.callback(invoke_without_command=True)
def default(context: typer.Context) -> None:
    """With no command, run the control loop."""
    if context.invoked_subcommand is None:
        context.invoke(run)


@app.command()
def run() -> None:
    """Run the control loop until SIGTERM."""
    from rollout.service import run as run_loop

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        raise typer.Exit(run_loop(Settings()))
    except RolloutError as error:
        _fail(error)


@app.command("init-config")
def init_config() -> None:
    """Write the model config if it does not exist (each model's newest version stable)."""
    try:
        controller = _controller()
        controller.bootstrap()
    except RolloutError as error:
        _fail(error)
    for model, state in controller.states().items():
        typer.echo(f"{model}: stable version {state.stable}")


def _share(state: ModelState, controller: Controller) -> str:
    record = controller.record_of(state)
    if record.canary_percent:
        return f"{record.canary_percent:g}% canary"
    if record.shadow_percent:
        return f"{record.shadow_percent:g}% shadow copies"
    return "-"


def _format_value(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def describe(controller: Controller) -> str:
    """The text `rollout status` prints."""
    lines = []
    now = time.time()
    for model, state in controller.states().items():
        policy = controller.policies[model]
        lines.append(f"model {model}")
        lines.append(f"  stable      version {_format_value(state.stable)}")
        if state.candidate is not None:
            stage = state.stage
            if stage == "canary":
                stage += f" step {state.step + 1}/{len(policy.canary.steps)}"
            if state.paused:
                stage += " (paused)"
            since = f"for {now - state.stage_started:.0f}s" if state.stage_started else ""
            share = _share(state, controller)
            lines.append(f"  candidate   version {state.candidate}: {stage}, {share} {since}")
        else:
            lines.append("  candidate   none")
        if state.rolled_back:
            lines.append(f"  rolled back {', '.join(map(str, state.rolled_back))}")
        decision = state.last_decision
        if decision:
            when = time.strftime("%H:%M:%S", time.localtime(decision["time"]))
            lines.append(f"  last decision {decision['decision']} at {when}: {decision['reason']}")
            checks = decision.get("checks") or []
            if checks:
                lines.append(
                    f"    {'check':<17} {'status':<7} {'candidate':>10} {'stable':>10}  "
                    f"{'samples':>11}  threshold"
                )
                for check in checks:
                    samples = f"{check['samples']:.0f}/{check['min_samples']}"
                    lines.append(
                        f"    {check['name']:<17} {check['status']:<7} "
                        f"{_format_value(check['candidate']):>10} "
                        f"{_format_value(check['stable']):>10}  {samples:>11}  {check['threshold']}"
                    )
    return "\n".join(lines)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="the states as JSON")] = False,
) -> None:
    """Each model's versions, stage, traffic share and last decision with its evidence."""
    try:
        controller = _controller()
        require_config(controller.store)
        if as_json:
            states = {m: s.__dict__ for m, s in controller.states().items()}
            typer.echo(json.dumps(states, indent=2, default=str))
        else:
            typer.echo(describe(controller))
    except RolloutError as error:
        _fail(error)


def _act(action: str, model: str, version: int) -> None:
    try:
        controller = _controller()
        require_config(controller.store)
        if action == "promote":
            entry = controller.promote(model, version)
        elif action == "rollback":
            entry = controller.rollback(model, version)
        else:
            entry = controller.pause(model, version, paused=action == "pause")
    except RolloutError as error:
        _fail(error)
    typer.echo(f"{model} version {version}: {entry['decision']} ({entry['reason']})")


Model = Annotated[str, typer.Argument(help="model name, as in rollout/policies/<model>.yaml")]
Version = Annotated[int, typer.Argument(help="the version (the candidate in progress)")]


@app.command()
def promote(model: Model, version: Version) -> None:
    """Promote the candidate to stable now (it must be AVAILABLE)."""
    _act("promote", model, version)


@app.command()
def rollback(model: Model, version: Version) -> None:
    """Roll the candidate back now: no traffic, no label."""
    _act("rollback", model, version)


@app.command()
def pause(model: Model, version: Version) -> None:
    """Freeze the candidate where it is: shares stay, nothing advances."""
    _act("pause", model, version)


@app.command()
def resume(model: Model, version: Version) -> None:
    """Let a paused candidate continue (its current window starts again)."""
    _act("resume", model, version)


def main() -> None:
    """Entry point of `python -m rollout`."""
    app(prog_name="python -m rollout")


if __name__ == "__main__":
    sys.exit(main())
