"""`{ script = "scripts/db.sh", args = [...], env = {...} }`: a script of the project,
uploaded and run."""

from __future__ import annotations

import shlex
from pathlib import Path

from pydantic import Field

from vbox_cli.envfile.types import Args, EnvVars, ProjectPath, StepBase

KEY = "script"


class Model(StepBase):
    script: ProjectPath = Field(description="path of a script, relative to the Envfile; uploaded and run")
    args: Args = Field((), description="arguments to the script")
    env: EnvVars = Field(default_factory=dict, description="environment variables for the script")


def files(step: Model) -> list[str]:
    return [step.script]


def summary(step: Model) -> str:
    return f"script: {step.script}"


def run(step: Model, ctx) -> int:
    path = ctx.upload(ctx.read(step.script), Path(step.script).name, 0o700)
    assignments = [f"{key}={value}" for key, value in step.env.items()]
    return ctx.run(f"{ctx.sudo(step)}env {shlex.join(assignments)} {shlex.quote(path)} {shlex.join(step.args)}",
                   path)
