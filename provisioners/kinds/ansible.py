"""`{ ansible = "site.yml", groups = ["web"], extra_vars = { env = "dev" } }`: a playbook
of the project, run by ansible-playbook on this host against this machine (`--limit`),
with the inventory vbox makes of the project (provisioners/ansible.py). Ansible runs the
playbook's own code on this host (lookups, local actions, the project's plugins), so
env asks before the first run, as for a host trigger."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import BeforeValidator, Field

from vbox_cli.envfile.types import AnsibleName, ProjectPath, StepBase, _as_tuple

KEY = "ansible"


class Model(StepBase):
    ansible: ProjectPath = Field(description="a playbook of the project, relative to the Envfile, run on this host "
                                             "by ansible-playbook against this machine")
    groups: Annotated[tuple[AnsibleName, ...], BeforeValidator(_as_tuple)] = Field((), description="Ansible groups this machine is in, in the inventory")
    extra_vars: dict[AnsibleName, Union[str, int, float, bool]] = Field(
        default_factory=dict, description="variables for the playbook (ansible-playbook --extra-vars)")


def files(step: Model) -> list[str]:
    return [step.ansible]


def summary(step: Model) -> str:
    return f"ansible: {step.ansible}"


def run(step: Model, ctx) -> int:
    from provisioners.ansible import run_playbook

    return run_playbook(step, ctx)
