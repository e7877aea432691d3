"""Writing files safely: atomically, with the mode set before any byte is written, and
never through a symlink that a project folder may hold."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644, durable: bool = True) -> None:
    """Replace `path` with `data`: a reader sees the old file or the new one, never half of
    it. The temporary file is made with O_EXCL (a planted file or link is not followed)
    and has `mode` from its creation; `durable` fsyncs the file and its folder."""
    if isinstance(data, str):
        data = data.encode()
    folder = path.parent
    tmp = folder / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # the umask does not decide
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        from vbox_cli.errors import disk_error

        if isinstance(exc, OSError) and (error := disk_error(OSError(exc.errno, exc.strerror, str(path)))):
            raise error from None
        raise
    if durable:
        try:
            dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, read without following a
    final symlink; a FIFO, device or folder is refused rather than read (a FIFO would
    block, /dev/zero would never end)."""
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IsADirectoryError(f"{path} is not a regular file") if stat.S_ISDIR(info.st_mode) else \
                OSError(f"{path} is not a regular file")
        if info.st_size > limit:
            raise OSError(f"{path} is larger than {limit} bytes")
        chunks, total = [], 0
        while chunk := os.read(fd, 1024 * 1024):
            total += len(chunk)
            if total > limit:
                raise OSError(f"{path} is larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def project_file(project_dir: Path, relative: str) -> Path:
    """The path of a project file named in the Envfile, resolved (symlinks followed); it
    must stay inside the project folder. Raises ValueError otherwise."""
    base = Path(os.path.realpath(project_dir))
    if os.path.isabs(relative):
        raise ValueError(f"{relative!r} is an absolute path; name a file of the project, relative to the Envfile")
    target = Path(os.path.realpath(base / relative))
    if target != base and not target.is_relative_to(base):
        raise ValueError(f"{relative!r} leads outside the project folder ({target})")
    return target
