"""Load an Envfile: read, parse (TOML), validate (model), check (paths), in that order.

Every problem is reported at once, each located at a line and column, and no input,
however malformed, escapes as anything but an EnvfileError.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from vbox_cli.envfile.locate import Positions
from vbox_cli.envfile.model import STEP_KINDS, Envfile, Machine, fields_of
from vbox_cli.envfile.source import read
from vbox_cli.errors import EnvfileError, Problem
from vbox_cli.paths import display_name

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_AT_END = re.compile(r"\s*\(at end of document\)$")


@dataclass(frozen=True)
class LoadedEnvfile:
    path: Path
    envfile: Envfile
    machines: dict[str, Machine]

    @property
    def project_dir(self) -> Path:
        return self.path.parent


def load(path: Path, data: bytes | None = None) -> LoadedEnvfile:
    """Load and validate the Envfile at `path` (whose bytes may be given, already read)."""
    if data is None:
        data = read(path)
    envfile = parse(data, display_name(path), path.parent)
    return LoadedEnvfile(path=path.resolve(), envfile=envfile, machines=envfile.machines_resolved())


def referenced_files(envfile: Envfile) -> list[tuple[tuple, str]]:
    """(location, relative path) of every project file the Envfile names: the files the
    steps read, and those a `host` URI names (keyfile, known_hosts)."""
    from provisioners.kinds import files, kind_of
    from vbox_cli.envfile.types import HOST_URI_PARAMETERS, host_uri_parameters

    step_lists: list[tuple[tuple, tuple]] = [(("defaults", "provision"), envfile.defaults.provision)]
    for machine, spec in envfile.machines.items():
        if spec.provision is not None:
            step_lists.append((("machines", machine, "provision"), spec.provision))
    found = []
    for prefix, steps in step_lists:
        for index, step in enumerate(steps):
            found += [((*prefix, index, kind_of(step)), relative) for relative in files(step)]
    hosts = [(("defaults", "host"), envfile.defaults.host)]
    hosts += [(("machines", name, "host"), spec.host) for name, spec in envfile.machines.items()]
    for location, uri in hosts:
        found += [(location, value) for name, value in (host_uri_parameters(uri) if uri else [])
                  if HOST_URI_PARAMETERS[name] is None]
    return found


def referenced_folders(envfile: Envfile) -> list[tuple[tuple, str]]:
    """(location, relative path) of every project folder the machines see (`folders`)."""
    tables = [(("defaults", "folders"), envfile.defaults.folders)]
    tables += [(("machines", name, "folders"), spec.folders) for name, spec in envfile.machines.items()
               if spec.folders is not None]
    return [((*where, index, "host"), folder.host) for where, folders in tables
            for index, folder in enumerate(folders)]


def parse(data: bytes, name: str, base_dir: Path | None) -> Envfile:
    """Validate the bytes of an Envfile called `name`; paths are checked under base_dir."""
    text = _decode(data, name)
    document = _parse_toml(text, name)
    positions = Positions(text)
    from pydantic import ValidationError

    try:
        envfile = Envfile.model_validate(document)
    except ValidationError as exc:
        problems = [_problem(error, name, positions) for error in exc.errors(include_url=False)]
        raise EnvfileError(name, _sorted(problems)) from None
    problems = _check(envfile, name, positions, base_dir)
    if problems:
        raise EnvfileError(name, _sorted(problems))
    return envfile


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.line, p.column, p.path))


def _decode(data: bytes, name: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        raise EnvfileError(
            name, [Problem(name, line, column, "", f"not UTF-8 text (byte 0x{data[exc.start]:02x})")]
        ) from None
    return text.removeprefix("\ufeff")


def _parse_toml(text: str, name: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        if match := _TOML_POSITION.search(message):
            line, column = int(match[1]), int(match[2])
            message = message[: match.start()]
        else:
            message = _TOML_AT_END.sub("", message)
            lines = text.split("\n")
            line, column = len(lines), len(lines[-1]) + 1
        raise EnvfileError(
            name, [Problem(name, line, column, "", f"TOML syntax: {message}", hint=_toml_hint(message))]
        ) from None
    except (RecursionError, ValueError) as exc:  # pathological nesting, odd numbers
        raise EnvfileError(name, [Problem(name, 1, 1, "", f"TOML syntax: {exc}")]) from None


def _toml_hint(message: str) -> str | None:
    if "Cannot declare" in message or "Cannot overwrite" in message:
        return "each key and table may appear only once"
    if message.startswith("Invalid value") or message.startswith("Expected newline or end of document"):
        return 'strings need quotes, like memory = "1G"'
    return None


# -- turning pydantic errors into located problems ---------------------------------


def _without_tags(loc: tuple) -> tuple:
    """Drop the step-kind tags pydantic puts in the location of a tagged union member."""
    out: list = []
    for i, part in enumerate(loc):
        if part in STEP_KINDS and i >= 2 and isinstance(loc[i - 1], int) and loc[i - 2] == "provision":
            continue
        if part == "[key]" and i == 2 and loc[0] == "machines":  # pydantic's mark of a bad machine name
            continue
        out.append(part)
    return tuple(out)


def dotted(loc: tuple) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _problem(error: dict, name: str, positions: Positions) -> Problem:
    loc = tuple(error["loc"])
    path = _without_tags(loc)
    kind = error["type"]
    message = error["msg"].removeprefix("Value error, ")
    hint = None
    if kind == "extra_forbidden":
        key = str(path[-1])
        message = f"unknown key {key!r}"
        known = fields_of(loc[:-1]) or []
        if close := difflib.get_close_matches(key, known, n=1, cutoff=0.6):
            hint = f"did you mean {close[0]!r}?"
        elif known:
            hint = "known keys here: " + ", ".join(known)
    elif kind == "missing":
        message = f"required key {path[-1]!r} is missing"
        if path == ("machines",):
            hint = "declare at least one machine, like [machines.web]"
    elif kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        message = f"must be {expected}; got {error['input']!r}"
        choices = re.findall(r"'([^']*)'", expected)
        if isinstance(error["input"], str) and (close := difflib.get_close_matches(error["input"], choices, n=1)):
            hint = f"did you mean {close[0]!r}?"
    elif kind == "too_short" and path == ("machines",):
        message = "no machines declared"
        hint = "declare at least one machine, like [machines.web]"
    elif kind in _TYPE_WORDS or kind.endswith("_type") or kind.endswith("_parsing"):
        wanted = _TYPE_WORDS.get(kind) or f"{message[0].lower()}{message[1:]}"
        message = f"{wanted}; got {_describe(error['input'])}"
    elif kind in ("greater_than_equal", "less_than_equal"):
        message = f"{message[0].lower()}{message[1:]}; got {error['input']!r}"
    line, column = positions.find(path)
    return Problem(name, line, column, dotted(path), message, hint)


_TYPE_WORDS = {
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "tuple_type": "must be an array",
    "list_type": "must be an array",
}


def _describe(value) -> str:
    kinds = {dict: "a table", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
             float: "a float"}
    kind = kinds.get(type(value), type(value).__name__)
    if isinstance(value, (dict, list)):
        return kind
    return f"{kind} ({value!r})"


# -- checks that need more than one field, or the file system ---------------------


def _check(envfile: Envfile, name: str, positions: Positions, base_dir: Path | None) -> list[Problem]:
    problems: list[Problem] = []

    def report(path: tuple, message: str, hint: str | None = None) -> None:
        line, column = positions.find(path)
        problems.append(Problem(name, line, column, dotted(path), message, hint))

    if base_dir is not None:
        from vbox_cli.files import project_file

        for location, relative in referenced_files(envfile):
            try:
                target = project_file(base_dir, relative)
            except ValueError as exc:
                report(location, str(exc), hint="for your own keys, use qemu+ssh:// with your ~/.ssh/config"
                       if location[-1] == "host" else "a step may only read files of the project folder")
                continue
            if not target.is_file():
                what = "no such file" if not target.exists() else "not a regular file"
                report(location, f"{what}: {relative!r} (relative to {base_dir})")

    seen: dict[str, str] = {}
    for machine_name, machine in envfile.machines_resolved().items():
        if (other := seen.get(machine.hostname)) is not None:
            # blame the machine that set the host name explicitly
            culprit, twin = (machine_name, other)
            if envfile.machines[machine_name].hostname is None:
                culprit, twin = other, machine_name
            report(("machines", culprit, "hostname"),
                   f"host name {machine.hostname!r} is also the host name of machine {twin!r}",
                   hint="each machine needs a host name of its own")
        seen[machine.hostname] = machine_name
    from vbox_cli.envfile import checks

    checks.hosts(envfile, report)
    checks.depends_on(envfile, report)
    checks.triggers(envfile, report)
    checks.ansible(envfile, report)
    checks.ports(envfile, report)
    checks.networks(envfile, report)
    checks.folders(envfile, base_dir, report)
    checks.box_urls(envfile, base_dir, report)
    return problems
