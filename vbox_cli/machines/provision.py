"""Provisioning: which steps a machine still needs, and running them over SSH."""

from __future__ import annotations

from vbox_cli.errors import VboxError
from vbox_cli.events import Phase
from vbox_cli.machines.runner import Result, run_each


def steps_to_run(project, name: str, steps, force: bool) -> list[int]:
    from provisioners.steps import step_ids

    done = set(project.machine_state(name).get("provisioned", []))
    ids = step_ids(steps)
    return [i for i, step in enumerate(steps) if force or step.run == "always" or ids[i] not in done]


def run_steps(session, name: str, steps, todo: list[int], settle: bool = False) -> None:
    """Connect (waiting for SSH up to boot_timeout) and run the steps `todo`, recording
    the run="once" ones as they succeed. `settle`: a machine from a cloud image that has
    just booted: cloud-init finishes setting it up first (it answers SSH before that)."""
    from provisioners.steps import StepContext, run_step, step_ids, summary, work_dir

    session.events.phase(name, Phase.CONNECTING)
    conn = session.connect(name)
    try:
        if settle:
            session.events.phase(name, Phase.CONNECTING, "cloud-init finishing")
            conn.run("cloud-init status --wait >/dev/null 2>&1; true", lambda line: None)
        ids = step_ids(steps)
        work = work_dir(conn) if todo else ""
        for index in todo:
            step = steps[index]
            session.events.phase(name, Phase.PROVISIONING, f"{index + 1}/{len(steps)}: {summary(step)}")
            ctx = StepContext(conn, work, name, index, session.loaded.project_dir,
                              lambda line: session.events.output(name, line), lambda: _inventory(session))
            run_step(ctx, step)
            if step.run == "once":
                session.project.update_state(lambda s: _record_step(s, name, ids[index]))
    finally:
        conn.close()


def _inventory(session) -> dict:
    from provisioners.ansible import inventory

    return inventory(session.project, session.machines, session.project.load_state()["machines"])


def _record_step(state: dict, name: str, step_id: str) -> None:
    done = state["machines"].setdefault(name, {}).setdefault("provisioned", [])
    if step_id not in done:
        done.append(step_id)


def provision(session, names: list[str], force: bool, jobs: int | None = None) -> list[Result]:
    from providers.base import RUNNING
    from vbox_cli.machines.order import Barrier

    selected = session.select(names)
    barrier = Barrier(session, selected)

    def run(name: str) -> str:
        from vbox_cli.machines.triggers import fire

        provider = session.provider(name)
        if provider.state(session.project.object_name(name)) != RUNNING:
            raise VboxError(f"{name} is not running", hint=f"`env up {name}` brings it up and provisions it")
        fire(session, name, "before", "provision")
        steps = session.machines[name].provision
        todo = steps_to_run(session.project, name, steps, force)
        if not todo:
            fire(session, name, "after", "provision")
            session.events.phase(name, Phase.READY, "nothing to do")
            return "nothing to do (run=\"once\" steps ran already; --force runs them)"
        barrier.wait(name)
        run_steps(session, name, steps, todo)
        fire(session, name, "after", "provision")
        session.events.phase(name, Phase.READY, f"{len(todo)} step{'s' if len(todo) != 1 else ''} run")
        return f"provisioned ({len(todo)} step{'s' if len(todo) != 1 else ''})"

    return run_each(session, barrier.schedule(selected), run, jobs, finished=barrier.finished)
