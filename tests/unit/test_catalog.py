"""Catalogs and downloads against an HTTP server this test starts on 127.0.0.1: version
constraints as Vagrant's, where a catalog may point (never at a file outside its own
folder), sha256 checked before use, a cut download resumed, two fetches of one file
taking turns, and redirects to anything but http(s) refused."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
from pathlib import Path

import pytest

from boxes import catalog
from boxes.catalog import CatalogError, Location, locate
from boxes.versions import Constraint


@pytest.mark.parametrize("text, allowed, refused", [
    ("", ["1.0", "12.0.9"], []),
    (">= 12.1, < 13", ["12.1", "12.9.9"], ["12.0.9", "13.0"]),
    ("~> 12.0", ["12.0", "12.9"], ["11.9", "13.0"]),
    ("~> 12.1.3", ["12.1.3", "12.1.9"], ["12.1.2", "12.2.0"]),
    ("12.0.9", ["12.0.9", "12.0.9.0"], ["12.0.8"]),
    ("!= 12.0.8, > 12", ["12.0.9"], ["12.0.8", "12"]),
])
def test_constraints(text, allowed, refused):
    constraint = Constraint(text)
    assert all(constraint.allows(v) for v in allowed)
    assert not any(constraint.allows(v) for v in refused)


def test_newest_and_bad_constraints():
    assert Constraint(">= 12.0, < 13").newest(["12.0.10", "12.0.9", "13.1", "12.1"]) == "12.1"
    assert Constraint("~> 1.2").newest(["2.0"]) is None
    for bad in (">= twelve", "~> 12", "=> 12"):
        with pytest.raises(ValueError):
            Constraint(bad)


# -- a server of our own ------------------------------------------------------------------
class Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with Range; `cut` drops the first answer for a path after that many bytes."""

    cut: dict[str, int] = {}
    redirects: dict[str, str] = {}
    served: list[tuple[str, str]] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.served.append((self.path, self.headers.get("Range", "")))
        if self.path in self.redirects:
            self.send_response(302)
            self.send_header("Location", self.redirects[self.path])
            self.end_headers()
            return
        path = Path(self.directory) / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][6:].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        limit = self.cut.pop(self.path, None)
        self.wfile.write(body if limit is None else body[:limit])
        if limit is not None:
            self.wfile.flush()
            self.connection.shutdown(2)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    Handler.cut, Handler.redirects, Handler.served = {}, {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Handler(*a, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def write_catalog(folder: Path, name: str, entries: list[tuple[str, str, str]]) -> Path:
    path = folder / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    versions = [{"version": v, "providers": [{"name": "vbox", "url": url, "checksum_type": "sha256",
                                              "checksum": sha}, {"name": "libvirt", "url": "x.box"}]}
                for v, url, sha in entries]
    path.write_text(json.dumps({"name": name, "versions": versions}))
    return path


def test_choose_from_a_remote_catalog(server):
    root, base = server
    write_catalog(root, "team/deb", [("12.0.9", "deb/12.0.9/vbox.box", "a" * 64),
                                     ("12.1.0", "https://cdn.example.org/deb-12.1.0.box", "b" * 64),
                                     ("13.0", "deb/13.0/vbox.box", "c" * 64)])
    offer = catalog.choose(Location(url=f"{base}/team/deb.json"), "team/deb", Constraint("~> 12.0"))
    assert (offer.version, offer.location.url, offer.sha256) == ("12.1.0", "https://cdn.example.org/deb-12.1.0.box",
                                                                 "b" * 64)
    offer = catalog.choose(Location(url=f"{base}/team/deb.json"), "team/deb", Constraint("< 12.1"))
    assert offer.location.url == f"{base}/team/deb/12.0.9/vbox.box"
    with pytest.raises(CatalogError, match="no version of team/deb that is >= 14"):
        catalog.choose(Location(url=f"{base}/team/deb.json"), "team/deb", Constraint(">= 14"))


@pytest.mark.parametrize("url", ["file:///etc/shadow", "/etc/shadow", "../../../etc/shadow"])
def test_a_catalog_cannot_point_at_files_outside_it(server, tmp_path, url):
    root, base = server
    write_catalog(root, "deb", [("1.0", url, "a" * 64)])
    (tmp_path / "local").mkdir()
    write_catalog(tmp_path / "local", "deb", [("1.0", url, "a" * 64)])
    if url.startswith("file:"):
        with pytest.raises(CatalogError, match="must be http"):
            catalog.choose(Location(url=f"{base}/deb.json"), "deb", Constraint(""))
    else:  # on a remote catalog, a path is one of its server's URLs, never a file here
        assert catalog.choose(Location(url=f"{base}/deb.json"), "deb", Constraint("")).location.url == \
            f"{base}/etc/shadow"
    with pytest.raises(CatalogError, match="outside its own folder"):
        catalog.choose(locate(str(tmp_path / "local")), "deb", Constraint(""))


def test_an_envfile_location_stays_in_its_project(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "boxes").mkdir()
    assert locate("boxes", base=project, confine=project).path == project / "boxes"
    for outside in ("../x.json", "file:///etc/shadow", "/etc/passwd"):
        with pytest.raises(CatalogError, match="outside the project"):
            locate(outside, base=project, confine=project)
    os.symlink("/etc", project / "link")
    with pytest.raises(CatalogError, match="outside the project"):
        locate("link/passwd", base=project, confine=project)
    with pytest.raises(CatalogError, match="not ftp"):
        locate("ftp://example.org/x.box")


def test_download_checks_resumes_and_is_shared(server, tmp_path):
    root, base = server
    data = os.urandom(3 * catalog.CHUNK + 12345)
    (root / "a.box").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    cache = tmp_path / "cache"
    Handler.cut["/a.box"] = catalog.CHUNK + 7  # the first answer stops early
    with pytest.raises(CatalogError, match="stopped at") as cut:
        catalog.fetch(Location(url=f"{base}/a.box"), sha, cache)
    assert "resumes" in cut.value.hint
    assert (cache / f"{sha}.part").stat().st_size == catalog.CHUNK + 7
    seen = []
    path = catalog.fetch(Location(url=f"{base}/a.box"), sha, cache, progress=lambda d, t: seen.append((d, t)))
    assert path.read_bytes() == data
    assert Handler.served[-1] == ("/a.box", f"bytes={catalog.CHUNK + 7}-")  # resumed, not from the start
    assert seen[-1] == (len(data), len(data))
    # fetched again (another project's up): the file is there, nothing is downloaded
    count = len(Handler.served)
    assert catalog.fetch(Location(url=f"{base}/a.box"), sha, cache) == path
    assert len(Handler.served) == count


def test_two_fetches_take_turns(server, tmp_path):
    root, base = server
    data = os.urandom(2 * catalog.CHUNK)
    (root / "b.box").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    results, waited = [], []

    def one():
        results.append(catalog.fetch(Location(url=f"{base}/b.box"), sha, tmp_path / "cache",
                                     on_wait=lambda: waited.append(1)))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1]
    assert [p for p, _ in Handler.served].count("/b.box") == 1  # one download for both


def test_wrong_checksum_keeps_nothing(server, tmp_path):
    root, base = server
    (root / "c.box").write_bytes(b"not what the catalog says")
    with pytest.raises(CatalogError, match="does not have the sha256"):
        catalog.fetch(Location(url=f"{base}/c.box"), "0" * 64, tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def test_redirects_only_to_http(server, tmp_path):
    root, base = server
    Handler.redirects["/evil.json"] = "file:///etc/shadow"
    Handler.redirects["/evil2.json"] = "ftp://127.0.0.1/x"
    with pytest.raises(CatalogError, match="not allowed"):  # urllib's own rule
        catalog.read_small(Location(url=f"{base}/evil.json"))
    with pytest.raises(CatalogError, match="http\\(s\\) redirects only"):  # ours, for what urllib lets by
        catalog.read_small(Location(url=f"{base}/evil2.json"))


def test_archive_url_needs_its_checksum(server):
    root, base = server
    (root / "d.box").write_bytes(b"x")
    with pytest.raises(CatalogError, match="no checksum beside it"):
        catalog.archive_sha256(Location(url=f"{base}/d.box"))
    (root / "d.box.sha256").write_text(f"{'e' * 64}  d.box\n")
    assert catalog.archive_sha256(Location(url=f"{base}/d.box")) == "e" * 64


def test_versions_sort_and_an_unconstrained_box_of_any_version():
    from boxes.versions import sort_key

    assert sorted(["12.0.10", "12.0.9", "latest", "12.1"], key=sort_key) == ["latest", "12.0.9", "12.0.10", "12.1"]
    assert Constraint("").allows("latest") and not Constraint(">= 1").allows("latest")


def test_providers_vbox_takes_best_first(server):
    """vbox's own archive where there is one, else the Vagrant box the machine can boot; an
    entry without a checksum is passed over, and alone it is an error."""
    root, base = server

    def entry(provider, sha="a" * 64):
        return {"name": provider, "url": f"{provider}.box", "checksum_type": "sha256", "checksum": sha}

    versions = [{"version": "1.0", "providers": [entry("libvirt"), entry("lxc"), entry("vbox")]},
                {"version": "1.1", "providers": [entry("libvirt"), entry("virtualbox")]},
                {"version": "1.2", "providers": [{"name": "lxc", "url": "lxc.box"}]}]
    (root / "v.json").write_text(json.dumps({"name": "v", "versions": versions}))
    where = Location(url=f"{base}/v.json")
    assert (catalog.choose(where, "v", Constraint("")).version, catalog.choose(where, "v", Constraint("")).provider) \
        == ("1.1", "libvirt")
    assert catalog.choose(where, "v", Constraint("< 1.1")).provider == "vbox"
    assert catalog.choose(where, "v", Constraint(""), ("vbox", "lxc")).version == "1.0"
    assert catalog.choose(where, "v", Constraint(""), ("vbox", "lxc")).provider == "vbox"
    with pytest.raises(CatalogError, match="offers no box for v that vbox can use here"):
        catalog.choose(where, "v", Constraint(""), ("xen",))
    (root / "w.json").write_text(json.dumps({"name": "w", "versions": versions[2:]}))
    with pytest.raises(CatalogError, match=r"version 1.2 \(lxc\) has no sha256"):
        catalog.choose(Location(url=f"{base}/w.json"), "w", Constraint(""))
