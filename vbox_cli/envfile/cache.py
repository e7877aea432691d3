"""Validated Envfiles, remembered by content.

Validation costs a pydantic import and model build (~70 ms). Commands that only read
the Envfile look here first: an entry is keyed by vbox's version, the Envfile's path
and its exact bytes, and holds the resolved machines and the files the steps name,
whose existence is checked again on every use. Entries live in vbox's cache folder
(not in the project), so `env validate` writes nothing into a project. This module
must not import pydantic.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from vbox_cli import __version__
from vbox_cli.errors import UsageError

KEEP = 200  # entries; the oldest go first


def read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no Envfile at {path}", hint="run `env init` to write one") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder, not an Envfile") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def _entry(path: Path, data: bytes) -> Path:
    from vbox_cli.paths import vbox_cache

    digest = hashlib.sha256(f"{__version__}\0{path.resolve()}\0".encode() + data).hexdigest()
    return vbox_cache() / "envfiles" / f"{digest}.json"


def lookup(path: Path, data: bytes) -> dict | None:
    """The summary of a valid Envfile with exactly these bytes, if it is still valid."""
    try:
        summary = json.loads(_entry(path, data).read_text())
    except (OSError, ValueError):
        return None
    if not all((path.parent / relative).is_file() for relative in summary.get("files", [])):
        return None  # a script or file went missing: validate in full to report it
    return summary


def summarize(path: Path, data: bytes) -> dict:
    """{"machines": {name: settings}, "files": [...]}, from the cache or by validating."""
    if (summary := lookup(path, data)) is not None:
        return summary
    from vbox_cli.envfile.load import load, referenced_files

    loaded = load(path, data)
    summary = {
        "machines": {name: m.model_dump(mode="json", exclude={"name"}) for name, m in loaded.machines.items()},
        "files": sorted({relative for _, _, relative in referenced_files(loaded.envfile)}),
    }
    _remember(_entry(path, data), summary)
    return summary


def _remember(entry: Path, summary: dict) -> None:
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(summary))
        os.replace(tmp, entry)
        entries = sorted(entry.parent.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for old in entries[:-KEEP]:
            old.unlink(missing_ok=True)
    except OSError:
        pass  # a cache that cannot be written only costs time
