"""`{ shell = "apt-get install -y nginx" }`: inline commands, run with /bin/sh -e."""

from __future__ import annotations

import shlex

from pydantic import Field

from vbox_cli.envfile.types import StepBase, Text

KEY = "shell"


class Model(StepBase):
    shell: Text = Field(description="inline shell commands")


def files(step: Model) -> list[str]:
    return []


def summary(step: Model) -> str:
    first = next((line.strip() for line in step.shell.splitlines() if line.strip()), "")
    return f"shell: {first[:60]}"


def run(step: Model, ctx) -> int:
    path = ctx.upload(step.shell.encode(), "sh", 0o700)
    return ctx.run(f"{ctx.sudo(step)}/bin/sh -e {shlex.quote(path)}", path)
