"""`{ file = "conf/site.conf", to = "/etc/nginx/site.conf", mode = "0644" }`: a file of
the project, installed in the machine."""

from __future__ import annotations

import shlex

from pydantic import Field

from vbox_cli.envfile.types import FileMode, GuestPath, ProjectPath, StepBase

KEY = "file"


class Model(StepBase):
    file: ProjectPath = Field(description="path of a file, relative to the Envfile; uploaded")
    to: GuestPath = Field(description="absolute destination in the machine")
    mode: FileMode | None = Field(None, description='octal mode, like "0644"')


def files(step: Model) -> list[str]:
    return [step.file]


def summary(step: Model) -> str:
    return f"file: {step.file} -> {step.to}"


def run(step: Model, ctx) -> int:
    path = ctx.upload(ctx.read(step.file), "file", 0o600)
    owner = "-o root -g root " if step.privileged else ""
    return ctx.run(f"{ctx.sudo(step)}install -D -m {step.mode or '0644'} {owner}{shlex.quote(path)} "
                   f"{shlex.quote(step.to)}", path)
