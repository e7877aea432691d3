"""Boxes from elsewhere: catalogs in Vagrant's box metadata format, box archives by URL,
and the downloads behind them.

A catalog is Vagrant's box metadata JSON, so a self-hosted Vagrant catalog works as it
is; vbox's own archives (`env box export`) appear in it under the provider name "vbox":

    {"name": "team/debian-12", "versions": [{"version": "12.0.9", "providers": [
        {"name": "vbox", "url": "debian-12/12.0.9/vbox.box",
         "checksum_type": "sha256", "checksum": "ab12..."}]}]}

A location is an http(s) URL, a file:// URL or a path: of a catalog (.json), of a
folder of catalogs (FOLDER/team/debian-12.json, as `env box publish` writes them), or of
a box archive (with the FILE.sha256 that export writes beside it). What a location may
lead to is narrowed by who gave it: an Envfile's local locations must be inside its
project; a catalog's URLs are resolved against the catalog and must be http(s), or files
in the catalog's own folder when the catalog is a local file (never file:///etc/...).
Redirects go to http(s) only. Every download is checked against its sha256 before
anything uses it; a download cut short resumes where the server allows (Range), and two
commands fetching the same file take turns (the second finds it done).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from boxes.tree import CHUNK, file_sha256
from boxes.versions import Constraint, sort_key
from vbox_cli.errors import VboxError

PROVIDER = "vbox"  # our provider name in a catalog's versions[].providers[]
MAX_CATALOG = 4 * 1024 * 1024
TIMEOUT = 30

Progress = Callable[[int, int], None]


class CatalogError(VboxError):
    pass


@dataclass(frozen=True)
class Location:
    """Where a catalog or an archive is: a URL (http, https) or a local path."""

    url: str = ""
    path: Path | None = None

    @property
    def remote(self) -> bool:
        return bool(self.url)

    def __str__(self) -> str:
        return self.url or str(self.path)


def locate(text: str, base: Path | None = None, confine: Path | None = None) -> Location:
    """A location from what a user or an Envfile wrote; `base`: the folder a relative path
    is relative to; `confine`: a folder a local path must resolve inside (an Envfile's
    project)."""
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme in ("http", "https"):
        if not parsed.netloc:
            raise CatalogError(f"{text!r} is not a URL: it names no host")
        return Location(url=text)
    if parsed.scheme == "file":
        path = Path(urllib.parse.unquote(parsed.path))
    elif parsed.scheme and len(parsed.scheme) > 1:
        raise CatalogError(f"{text!r}: vbox fetches boxes over http, https or from files, not {parsed.scheme}:")
    else:
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
    resolved = Path(os.path.realpath(path))
    if confine is not None and not resolved.is_relative_to(os.path.realpath(confine)):
        raise CatalogError(f"{text!r} leads outside the project folder",
                           hint="a box location in an Envfile is a URL or a path inside the project")
    return Location(path=resolved)


def _within(location: Location, reference: str) -> Location:
    """A URL of a catalog (a provider's box), resolved against the catalog's location."""
    parsed = urllib.parse.urlsplit(reference)
    if location.remote:
        url = urllib.parse.urljoin(location.url, reference)
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise CatalogError(f"the catalog {location} points at {reference!r}: a remote catalog's boxes must be "
                               "http(s) URLs")
        return Location(url=url)
    if parsed.scheme in ("http", "https"):
        return Location(url=reference)
    if parsed.scheme not in ("", "file"):
        raise CatalogError(f"the catalog {location} points at {reference!r}, which vbox does not fetch")
    folder = location.path.parent
    target = Path(urllib.parse.unquote(parsed.path)) if parsed.scheme == "file" else folder / reference
    resolved = Path(os.path.realpath(target))
    if not resolved.is_relative_to(os.path.realpath(folder)):
        raise CatalogError(f"the catalog {location} points at {reference!r}, outside its own folder",
                           hint="a local catalog's boxes are files beside it (or http(s) URLs)")
    return Location(path=resolved)


# -- http --------------------------------------------------------------------------------
class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise CatalogError(f"{req.full_url} redirects to {newurl!r}: vbox follows http(s) redirects only")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open(url: str, headers: dict | None = None):
    opener = urllib.request.build_opener(_HttpOnlyRedirects())
    request = urllib.request.Request(url, headers={"User-Agent": "vbox", **(headers or {})})
    try:
        return opener.open(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            return exc  # a Range past the end: the caller starts again
        raise CatalogError(f"{url}: the server answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CatalogError(f"{url}: cannot fetch it ({reason})") from None


def read_small(location: Location, what: str = "catalog") -> bytes:
    """A catalog (or a .sha256 file): at most MAX_CATALOG bytes."""
    if location.remote:
        with _open(location.url) as response:
            data = response.read(MAX_CATALOG + 1)
    else:
        try:
            with open(location.path, "rb") as f:
                data = f.read(MAX_CATALOG + 1)
        except OSError as exc:
            raise CatalogError(f"cannot read the {what} {location}: {exc.strerror}") from None
    if len(data) > MAX_CATALOG:
        raise CatalogError(f"the {what} {location} is larger than {MAX_CATALOG >> 20} MiB")
    return data


# -- catalogs ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Offer:
    """One version of a box that a catalog offers for vbox."""

    name: str
    version: str
    location: Location  # of the archive
    sha256: str
    catalog: str  # where it was found, for messages and `env box outdated`
    provider: str = PROVIDER  # "vbox" (an `env box export` archive), or a Vagrant box's "libvirt" or "lxc"


def catalog_location(location: Location, name: str) -> Location:
    """A folder of catalogs holds NAME.json (team/debian-12 -> team/debian-12.json)."""
    if location.path is not None and location.path.is_dir():
        return Location(path=location.path / f"{name}.json")
    return location


def load_catalog(location: Location) -> dict:
    data = read_small(location)
    try:
        catalog = json.loads(data)
    except ValueError:
        raise CatalogError(f"the catalog {location} is not JSON") from None
    if not isinstance(catalog, dict) or not isinstance(catalog.get("versions"), list):
        raise CatalogError(f"the catalog {location} has no \"versions\" list (Vagrant's box metadata format)")
    return catalog


# which of a catalog's providers' boxes vbox takes, best first: its own archives, then
# Vagrant boxes (boxes/vagrant.py); a machine's provider narrows it (machines/boxes.py)
PROVIDERS = (PROVIDER, "libvirt", "lxc", "virtualbox", "vmware_desktop")


def offers(location: Location, name: str, providers: tuple[str, ...] = PROVIDERS) -> list[Offer]:
    """The versions of `name` the catalog at `location` offers in one of `providers`'
    formats (valid ones only)."""
    from boxes.versions import parse

    location = catalog_location(location, name)
    catalog = load_catalog(location)
    if catalog.get("name") not in (None, name):
        raise CatalogError(f"the catalog {location} is of the box {catalog.get('name')!r}, not {name!r}")
    found, unchecked = [], []
    for entry in catalog["versions"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("version"), str):
            continue
        try:
            parse(entry["version"])
        except ValueError:
            continue
        for provider in entry.get("providers") or []:
            if not isinstance(provider, dict) or provider.get("name") not in providers:
                continue
            checksum, kind, url = provider.get("checksum"), provider.get("checksum_type"), provider.get("url")
            if kind != "sha256" or not isinstance(checksum, str) or len(checksum) != 64 or not isinstance(url, str):
                unchecked.append(f"version {entry['version']} ({provider['name']})")
                continue  # Vagrant's catalogs may leave the checksum out: vbox does not take such a box
            found.append(Offer(name, entry["version"], _within(location, url), checksum.lower(), str(location),
                               provider["name"]))
    if not found and unchecked:
        raise CatalogError(f"the catalog {location}: {', '.join(unchecked[:3])} has no sha256 checksum",
                           hint="vbox uses a box only after checking its sha256")
    return found


def choose(location: Location, name: str, constraint: Constraint, providers: tuple[str, ...] = PROVIDERS) -> Offer:
    """The newest allowed version, in the first of `providers` it comes in."""
    available = offers(location, name, providers)
    if not available:
        raise CatalogError(f"the catalog {catalog_location(location, name)} offers no box for {name} that vbox "
                           f"can use here (providers {', '.join(providers)})")
    version = constraint.newest([o.version for o in available])
    if version is None:
        listed = ", ".join(sorted({o.version for o in available}))
        raise CatalogError(f"the catalog {catalog_location(location, name)} has no version of {name} that is "
                           f"{constraint} (it has {listed})")
    return min((o for o in available if o.version == version), key=lambda o: providers.index(o.provider))


# -- downloads ---------------------------------------------------------------------------
def fetch(location: Location, sha256: str, cache: Path, progress: Progress | None = None,
          on_wait: Callable[[], None] | None = None) -> Path:
    """The file at `location`, checked against `sha256`: a local file as it is, a URL
    downloaded into `cache` (resumed where it was cut short). Raises if the sum differs."""
    from vbox_cli.locks import exclusive

    if not location.remote:
        if not location.path.is_file():
            raise CatalogError(f"{location}: no such file")
        if file_sha256(location.path) != sha256:
            raise CatalogError(f"{location} does not have the sha256 its catalog gives")
        return location.path
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    done = cache / f"{sha256}.box"
    with exclusive(cache / f"{sha256}.lock", on_wait):  # another command fetching it: wait, then use it
        if done.is_file() and file_sha256(done) == sha256:
            return done
        partial = cache / f"{sha256}.part"
        _download(location.url, partial, progress)
        if file_sha256(partial) != sha256:
            partial.unlink(missing_ok=True)
            raise CatalogError(f"{location.url}: the download does not have the sha256 its catalog gives",
                               hint="nothing was kept; the file on the server may be damaged or replaced")
        os.replace(partial, done)
        return done


def _download(url: str, partial: Path, progress: Progress | None) -> None:
    have = partial.stat().st_size if partial.exists() else 0
    response = _open(url, {"Range": f"bytes={have}-"} if have else None)
    status = getattr(response, "status", None) or response.getcode()
    if have and status != 206:  # the server cannot resume (or the part is past its end): from the start
        have = 0
        if status == 416:
            response.close()
            response = _open(url)
    with response:
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else 0
        got = have
        with open(partial, "ab" if have else "wb") as out:
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    got += len(chunk)
                    if progress:
                        progress(got, max(total, got))
            except OSError as exc:
                raise CatalogError(f"{url}: the download stopped at {got} bytes ({exc})",
                                   hint="run the command again: it resumes where it stopped") from None
    if total and got < total:
        raise CatalogError(f"{url}: the download stopped at {got} of {total} bytes",
                           hint="run the command again: it resumes where it stopped")


def archive_sha256(location: Location) -> str:
    """The sha256 that `env box export` wrote beside an archive (FILE.sha256)."""
    sidecar = Location(url=location.url + ".sha256") if location.remote else \
        Location(path=location.path.with_name(location.path.name + ".sha256"))
    try:
        text = read_small(sidecar, "checksum file").decode(errors="replace").split()
    except CatalogError as exc:
        raise CatalogError(f"{location} has no checksum beside it ({exc.message})",
                           hint="vbox uses a box only after checking its sha256: publish it with its "
                                "FILE.sha256, or in a catalog") from None
    if not text or len(text[0]) != 64 or any(c not in "0123456789abcdef" for c in text[0].lower()):
        raise CatalogError(f"{sidecar} is not a sha256 checksum")
    return text[0].lower()


def is_archive(location: Location) -> bool:
    """A box archive rather than a catalog: its name ends with .box."""
    name = urllib.parse.urlsplit(location.url).path if location.remote else location.path.name
    return name.endswith(".box")


def obtain(store, name: str, where: Location, constraint: Constraint, cache: Path,
           progress: Progress | None = None, on_wait: Callable[[], None] | None = None,
           on_phase: Callable[[str], None] | None = None, providers: tuple[str, ...] = PROVIDERS):
    """Box `name` from a catalog or an archive at `where`, the newest version that
    `constraint` allows (in the first of `providers` it comes in): the store's copy if it
    has that version, else downloaded, checked and imported. The Box."""
    from boxes.archive import is_box_archive
    from boxes.userns import import_box
    from boxes.vagrant import is_vagrant_box

    version = "0"  # a Vagrant box file says none
    if is_archive(where):
        file = fetch(where, archive_sha256(where), cache, progress, on_wait)
        source = {"url": str(where)}
    else:
        offer = choose(where, name, constraint, providers)
        existing = store.find(name, offer.version)
        if existing is not None:
            return existing
        file = fetch(offer.location, offer.sha256, cache, progress, on_wait)
        source = {"catalog": offer.catalog, "version": offer.version, "sha256": offer.sha256,
                  "provider": offer.provider}
        version = offer.version
    try:
        if not is_box_archive(file) and is_vagrant_box(file):
            box = import_box("vagrant", file, store, name=name, version=version, on_phase=on_phase, source=source)
        else:
            box = import_box("vbox", file, store, name=name, on_phase=on_phase, source=source)
    finally:
        if where.remote or file.is_relative_to(cache):
            file.unlink(missing_ok=True)  # in the store now, or refused: not kept twice
    if not constraint.allows(box.version):
        raise CatalogError(f"{where} holds {name} {box.version}, which is not {constraint}",
                           hint="it was added to the store; name a location with a matching version")
    return box


def publish(archive_path: Path, folder: Path, name: str | None = None) -> tuple[str, str, Path]:
    """Put a box archive into a catalog folder: FOLDER/NAME/VERSION/vbox.box (with its
    .sha256) and FOLDER/NAME.json (Vagrant's format) listing it; other versions and other
    providers' entries are kept. (name, version, catalog file)."""
    import shutil

    from boxes.archive import open_archive, read_manifest
    from boxes.versions import parse
    from vbox_cli.envfile.types import _box_name
    from vbox_cli.files import atomic_write

    from boxes.archive import ArchiveError

    try:
        raw, tar = open_archive(archive_path)
        try:
            manifest = read_manifest(tar)
        finally:
            tar.close()
            raw.close()
    except ArchiveError as exc:
        raise CatalogError(f"{archive_path}: {exc.message}") from None
    name = name or manifest["name"]
    try:
        _box_name(name)
        parse(manifest["version"])
    except ValueError as exc:
        raise CatalogError(str(exc)) from None
    version = manifest["version"]
    catalog_file = folder / f"{name}.json"
    catalog = load_catalog(Location(path=catalog_file)) if catalog_file.exists() else {"name": name, "versions": []}
    if catalog.get("name") not in (None, name):
        raise CatalogError(f"{catalog_file} is the catalog of {catalog.get('name')!r}, not {name!r}")
    target = catalog_file.parent / name.split("/")[-1] / version / "vbox.box"
    target.parent.mkdir(parents=True, exist_ok=True)
    sha256 = file_sha256(archive_path)
    if not target.exists() or file_sha256(target) != sha256:
        shutil.copyfile(archive_path, target.with_name("vbox.box.part"))
        os.replace(target.with_name("vbox.box.part"), target)
    atomic_write(target.with_name("vbox.box.sha256"), f"{sha256}  vbox.box\n", 0o644)
    entry = next((v for v in catalog["versions"] if isinstance(v, dict) and v.get("version") == version), None)
    if entry is None:
        entry = {"version": version, "providers": []}
        catalog["versions"].append(entry)
    entry["providers"] = [p for p in entry.get("providers") or [] if not (isinstance(p, dict) and
                                                                          p.get("name") == PROVIDER)]
    entry["providers"].append({"name": PROVIDER, "url": f"{name.split('/')[-1]}/{version}/vbox.box",
                               "checksum_type": "sha256", "checksum": sha256})
    catalog["versions"].sort(key=lambda v: sort_key(v.get("version") if isinstance(v, dict) else None))
    catalog.setdefault("name", name)
    atomic_write(catalog_file, json.dumps(catalog, indent=2) + "\n", 0o644)
    return name, version, catalog_file
