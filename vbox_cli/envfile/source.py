"""Reading an Envfile's bytes, with errors a user can act on. Shared by the loader and
the cache (which must not import pydantic)."""

from __future__ import annotations

from pathlib import Path

from vbox_cli.errors import UsageError

MAX_ENVFILE = 4 * 1024**2


def read(path: Path) -> bytes:
    from vbox_cli.files import read_regular

    try:
        return read_regular(path, MAX_ENVFILE)
    except FileNotFoundError:
        raise UsageError(f"no Envfile at {path}", hint="run `env init` to write one") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder, not an Envfile") from None
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: a symlink, refused by O_NOFOLLOW
            return _through_link(path)
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _through_link(path: Path) -> bytes:
    """An Envfile that is a symlink is read only if it stays inside its folder."""
    import os

    from vbox_cli.files import read_regular

    target = Path(os.path.realpath(path))
    folder = Path(os.path.realpath(path.parent))
    if not target.is_relative_to(folder):
        raise UsageError(f"{path} is a symlink to {target}, outside the project folder; vbox will not read it")
    try:
        return read_regular(target, MAX_ENVFILE)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
