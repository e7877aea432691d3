"""Volumes sent through libvirt's storage API (how boxes and seed disks reach a remote
host), here against the real libvirtd: what goes up is what comes back."""

from __future__ import annotations

import os

import pytest

from providers.hosts import SYSTEM_URI, open_libvirt
from providers.storage import delete_volume, ensure_pool, is_remote, upload_volume

pytestmark = pytest.mark.integration


def _download(conn, vol) -> bytes:
    stream = conn.newStream(0)
    vol.download(stream, 0, 0, 0)
    chunks = []
    stream.recvAll(lambda _stream, data, _chunks: _chunks.append(data), chunks)
    stream.finish()
    return b"".join(chunks)


def test_upload_of_bytes_and_of_a_file_round_trips(host, tmp_path):
    conn = open_libvirt(SYSTEM_URI)
    assert not is_remote(conn)
    pool = ensure_pool(conn)
    name = f"vbox-test-upload-{os.getpid()}"
    data = os.urandom(3 * 1024**2 + 123)  # more than one chunk, not a whole one
    source = tmp_path / "file.bin"
    source.write_bytes(os.urandom(5000))
    try:
        vol = upload_volume(conn, pool, f"{name}.seed", data)
        assert vol.info()[1] == len(data)
        assert _download(conn, vol) == data
        again = upload_volume(conn, pool, f"{name}.seed", b"replaced")  # replaces, does not append
        assert _download(conn, again) == b"replaced"
        vol = upload_volume(conn, pool, f"{name}.bin", source)
        assert _download(conn, vol) == source.read_bytes()
    finally:
        for suffix in (".seed", ".bin"):
            delete_volume(pool, name + suffix)
        pool.refresh(0)
        left = [v.name() for v in pool.listAllVolumes(0) if v.name().startswith(name)]
        conn.close()
    assert left == []
