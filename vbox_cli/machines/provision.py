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


def run_steps(session, name: str, steps, todo: list[int], settle: bool = False, plan=None) -> None:
    """Connect (waiting for SSH up to boot_timeout) and run the steps `todo`, recording
    the run="once" ones as they succeed. `settle`: a machine from a cloud image that has
    just booted: cloud-init finishes setting it up first (it answers SSH before that).
    `plan` (machines/incremental.py): what the machine's disk holds is recorded step by
    step, with a snapshot before the first step and after each."""
    from vbox_cli.machines import incremental

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
            if plan is not None and plan.chain:
                incremental.keep(session, name, conn, index, plan)  # the state before it, if none is kept
            session.events.phase(name, Phase.PROVISIONING, f"{index + 1}/{len(steps)}: {summary(step)}")
            ctx = StepContext(conn, work, name, index, session.loaded.project_dir,
                              lambda line: session.events.output(name, line), lambda: _inventory(session))
            run_step(ctx, step)
            chain = incremental.ran(session, name, plan, index) if plan is not None and plan.chain else None
            session.project.update_state(lambda s: _record_step(s, name, ids[index] if step.run == "once" else None,
                                                                chain))
            if chain is not None:
                incremental.keep(session, name, conn, index + 1, plan)
        if plan is not None and plan.snapshots:
            incremental.tidy(session, name, len(steps))
    finally:
        conn.close()


def _inventory(session) -> dict:
    from provisioners.ansible import inventory

    return inventory(session.project, session.machines, session.project.load_state()["machines"])


def _record_step(state: dict, name: str, step_id: str | None, chain: list[str] | None) -> None:
    machine = state["machines"].setdefault(name, {})
    done = machine.setdefault("provisioned", [])
    if step_id is not None and step_id not in done:
        done.append(step_id)
    if chain is not None:
        machine["chain"] = chain


def provision(session, names: list[str], force: bool, jobs: int | None = None, from_step: int | None = None,
              in_place: bool = False) -> list[Result]:
    """Run the steps of running machines that are not run yet (run = "always" ones, all with
    `force`). A machine whose steps changed goes back to its snapshot before the first
    changed one, and the steps run from there (`from_step`: from that step, 1-based;
    `in_place`: the changed ones on top instead; machines/incremental.py)."""
    from providers.base import RUNNING
    from vbox_cli.machines import incremental
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
        plan = incremental.plan(session, name, steps, force, from_step, in_place)
        if not plan.todo and not plan.restore:
            fire(session, name, "after", "provision")
            session.events.phase(name, Phase.READY, _address(session, name))
            return "nothing to do (run=\"once\" steps ran already; --force runs them)"
        barrier.wait(name)
        back = ""
        if plan.restore:
            from vbox_cli.machines.snapshots import go_back, restart

            go_back(session, name, plan.restore)
            restart(session, name)
            back = f"back to {incremental.describe(plan)}, "
        run_steps(session, name, steps, plan.todo, plan=plan)
        fire(session, name, "after", "provision")
        count = f"{len(plan.todo)} step{'s' if len(plan.todo) != 1 else ''}"
        session.events.phase(name, Phase.READY, _address(session, name))
        return f"{back}provisioned ({count})"

    return run_each(session, barrier.schedule(selected), run, jobs, finished=barrier.finished)


def _address(session, name: str) -> str:
    """The `ready` phase's detail: where the machine is (the summary's address column)."""
    return session.project.machine_state(name).get("address", "")
