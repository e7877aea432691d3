"""Validated Envfiles, remembered by content.

Validation costs a pydantic import and model build (~70 ms). Commands that only read
the Envfile look here first: an entry is keyed by vbox's version (and its model file's
size and time), the Envfile's path and its exact bytes, and holds the resolved machines and the files the steps name,
whose existence is checked again on every use. Entries live in vbox's cache folder
(not in the project), so `env validate` writes nothing into a project. This module
must not import pydantic.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from vbox_cli import __version__
from vbox_cli.envfile.source import read  # noqa: F401 - the readers' entry point

KEEP = 200  # entries; the oldest go first


def _entry(path: Path, data: bytes) -> Path:
    from vbox_cli.paths import vbox_cache

    # the model's file too: a default that changed between two commits of one version
    model = Path(__file__).with_name("model.py").stat()
    digest = hashlib.sha256(f"{__version__}\0{model.st_size}\0{model.st_mtime_ns}\0{path.resolve()}\0".encode()
                            + data).hexdigest()
    return vbox_cache() / "envfiles" / f"{digest}.json"


def lookup(path: Path, data: bytes) -> dict | None:
    """The summary of a valid Envfile with exactly these bytes, if it is still valid."""
    try:
        summary = json.loads(_entry(path, data).read_text())
    except (OSError, ValueError):
        return None
    from vbox_cli.files import project_file

    try:
        if not all(project_file(path.parent, relative).is_file() for relative in summary.get("files", [])):
            return None  # a script or file went missing: validate in full to report it
        if not all(project_file(path.parent, relative).is_dir() for relative in summary.get("folders", [])):
            return None
    except ValueError:
        return None  # a link now leads out of the project: validate in full to report it
    return summary


def summarize(path: Path, data: bytes) -> dict:
    """{"machines": {name: settings}, "files": [...]}, from the cache or by validating."""
    if (summary := lookup(path, data)) is not None:
        return summary
    from vbox_cli.envfile.load import load, referenced_files, referenced_folders

    loaded = load(path, data)
    summary = {
        "machines": {name: m.model_dump(mode="json", exclude={"name"}) for name, m in loaded.machines.items()},
        "files": sorted({relative for _, relative in referenced_files(loaded.envfile)}),
        "folders": sorted({relative for _, relative in referenced_folders(loaded.envfile)}),
    }
    _remember(_entry(path, data), summary)
    return summary


def _remember(entry: Path, summary: dict) -> None:
    from vbox_cli.files import atomic_write

    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(entry, json.dumps(summary), durable=False)
        entries = sorted(entry.parent.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for old in entries[:-KEEP]:
            old.unlink(missing_ok=True)
    except OSError:
        pass  # a cache that cannot be written only costs time
