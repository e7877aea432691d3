"""`env suspend` and `env resume`: a machine's memory and processes saved to disk and
the machine stopped (its host's memory freed), then brought back as it was: KVM through
libvirt's managed save, LXC through CRIU (providers' Capability.SUSPEND). `up` of a
suspended machine resumes it too."""

from __future__ import annotations

from vbox_cli.errors import VboxError
from vbox_cli.events import Phase
from vbox_cli.machines.runner import Result, remote_first


def suspend(session, names: list[str], jobs: int | None = None) -> list[Result]:
    from providers.base import RUNNING, Capability, require
    from vbox_cli import folderwatch
    from vbox_cli.machines import ports

    def one(name: str) -> str:
        provider = session.provider(name)
        obj = session.project.object_name(name)
        require(provider, Capability.SUSPEND, name)
        if provider.state(obj) != RUNNING:
            if provider.suspended(obj):
                session.events.phase(name, Phase.SUSPENDED, "already")
                return "suspended already"
            raise VboxError(f"{name} is not running", hint=f"`env up {name}` starts it")
        session.events.phase(name, Phase.SUSPENDING)
        folderwatch.stop(session.project, name)
        provider.suspend(obj)
        ports.remove(session, name, provider)
        session.events.phase(name, Phase.SUSPENDED)
        return "suspended"

    return remote_first(session, session.select(names), one, jobs)


def resume(session, names: list[str], jobs: int | None = None) -> list[Result]:
    from providers.base import RUNNING, Capability, supports
    from vbox_cli.machines.runner import run_each
    from vbox_cli.machines.snapshots import restart

    def one(name: str) -> str:
        provider = session.provider(name)
        obj = session.project.object_name(name)
        if provider.state(obj) == RUNNING:
            session.events.phase(name, Phase.READY, session.project.machine_state(name).get("address", ""))
            return "running already"
        if not (supports(provider, Capability.SUSPEND) and provider.suspended(obj)):
            raise VboxError(f"{name} is not suspended", hint=f"`env up {name}` starts it")
        restart(session, name)
        session.events.phase(name, Phase.READY, session.project.machine_state(name).get("address", ""))
        return "resumed"

    return run_each(session, session.select(names), one, jobs)
