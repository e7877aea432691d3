"""The libvirt hosts of one command: this host's system libvirt and any remote host a
machine names. This is the one place libvirt connections are opened, and each host owns
the project network on it. Nothing outside providers/ sees a connection: the core asks
a host to plan, make or remove the project network.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
from urllib.parse import urlsplit

from vbox_cli.errors import VboxError

SYSTEM_URI = "qemu:///system"
SESSION_URI = "qemu:///session"


def open_libvirt(uri: str, failure: str | None = None, hint: str | None = None):
    """A libvirt connection; libvirt's error becomes one VboxError: `failure` (default:
    "cannot reach libvirt at URI"), then libvirt's own words."""
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)  # errors come as exceptions
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise VboxError(f"{failure or f'cannot reach libvirt at {uri}'}: {exc.get_error_message()}",
                        hint=hint or "run `env doctor --fix` to start libvirtd") from None


RECONNECT_TIMEOUT = 30.0  # how long a lost connection is tried again (libvirtd restarting)
IDLE_CHECK = 1.0  # a connection unused this long (seconds) is checked before it is used again


def find(lookup, name: str):
    """`lookup(name)` (conn.lookupByName, pool.storageVolLookupByName, ...), or None where
    libvirt says there is no such object. Any other error is raised: a lost connection is
    not an answer, and taking it for "not there" would make anew what exists."""
    import libvirt

    try:
        return lookup(name)
    except libvirt.libvirtError as exc:
        if gone(exc):
            return None
        raise


def gone(exc) -> bool:
    """libvirt's error says the object does not exist (any more: another project's
    network, listed a moment ago, removed since)."""
    import libvirt

    return exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_NETWORK,
                                    libvirt.VIR_ERR_NO_STORAGE_POOL, libvirt.VIR_ERR_NO_STORAGE_VOL)


def lost_connection(exc: BaseException) -> str | None:
    """libvirt's words when `exc` (or what it was raised from) is a libvirt connection
    that broke: libvirtd stopped or restarted, an SSH tunnel to a host closed. None for
    anything else."""
    libvirt = sys.modules.get("libvirt")
    if libvirt is None:
        return None
    seen: BaseException | None = exc
    for _ in range(8):  # a VboxError raised `from None` still has libvirt's error as its context
        if seen is None:
            return None
        if isinstance(seen, libvirt.libvirtError) and seen.get_error_domain() == libvirt.VIR_FROM_RPC:
            # libvirt's own wording ("internal error: client socket is closed" when a stream
            # of it broke): what happened, not an error of vbox's
            return seen.get_error_message().removeprefix("internal error: ")
        seen = seen.__cause__ or seen.__context__
    return None


def lost_error(exc: BaseException) -> VboxError | None:
    """A broken libvirt connection as the user's error it is (not vbox's bug)."""
    words = lost_connection(exc)
    if words is None:
        return None
    return VboxError(f"the connection to libvirt broke (libvirtd stopped or restarted): {words}",
                     hint="run the command again: what was done so far is kept (`env doctor --fix` starts libvirtd)")


def reconnect() -> None:
    """Every host whose connection broke is connected again (waiting for a restarting
    libvirtd); a VboxError says which did not come back."""
    for each in list(_hosts.values()):
        if each.opened:
            each.conn  # noqa: B018 (reading it opens a broken connection again)


class LibvirtHost:
    """One libvirt host: its connection (opened when first needed) and the project network there."""

    def __init__(self, uri: str, access=None):
        self.uri = uri
        self.access = access  # providers.remote.HostAccess, or None for this host's own libvirt
        self._conn = None
        self._used = 0.0  # time.monotonic() when the connection was last handed out
        self._lock = threading.Lock()

    @property
    def remote(self) -> bool:
        """Another host (or a machine of the Envfile that will be one, not up yet)."""
        return self.access is not None and (self.access.remote or self.access.pending)

    @property
    def key(self) -> str:
        """A short, stable name of the host; the project's network there is kept under it.
        "local" is this host's system libvirt, which also holds the LXC machines' network."""
        if self.uri == SYSTEM_URI:
            return "local"
        return self.access.key if self.access is not None else self.uri

    @property
    def shown(self) -> str:
        return self.access.shown if self.access is not None else self.uri

    @property
    def opened(self) -> bool:
        return self._conn is not None

    @property
    def conn(self):
        """The connection; one that broke (libvirtd restarted) is opened again. A broken
        connection looks alive until it is used, so one left idle a while is asked first."""
        with self._lock:
            now = time.monotonic()
            if self._conn is not None and not self._answers(idle=now - self._used):
                self._conn = self._reopen()
            if self._conn is None:
                self._conn = self._open()
            self._used = now
            return self._conn

    def _answers(self, idle: float) -> bool:
        try:
            if not self._conn.isAlive():
                return False
            if idle > IDLE_CHECK:
                self._conn.getLibVersion()  # a round trip
            return True
        except Exception:
            return False

    def _reopen(self):
        """A libvirtd that restarts answers again within seconds: try for a while."""
        try:
            self._conn.close()
        except Exception:
            pass
        deadline = time.monotonic() + RECONNECT_TIMEOUT
        while True:
            try:
                return self._open()
            except VboxError as exc:
                if time.monotonic() >= deadline:
                    raise VboxError(f"lost the connection to libvirt at {self.shown} and it did not come back "
                                    f"within {RECONNECT_TIMEOUT:g} s: {exc.message}",
                                    hint=f"{exc.hint}; then run the command again: what was done so far is kept"
                                    ) from None
            time.sleep(0.5)

    def _open(self):
        access = self.access
        if access is None:
            return open_libvirt(self.uri)
        if access.pending:
            raise VboxError(f"the host {access.shown} is a machine of this Envfile that is not up",
                            hint=f"`env up {access.machine}` first")
        tried = f" (tried {access.uri.split('?')[0]} with the project's SSH key)" if access.machine else ""
        local = not urlsplit(access.uri).hostname
        hint = ("this host runs no Xen with libvirt's Xen driver: name a Xen host with `host`"
                if local and access.uri.startswith("xen") else
                "check that the host is up, that libvirtd runs there and that this user may use it")
        return open_libvirt(access.uri, failure=f"the host {access.shown} does not answer{tried}", hint=hint)

    def close(self) -> None:
        """Close the connection (to a remote host: before that host goes; closing one to a
        host that is gone hangs)."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:
                    pass
                self._conn = None

    # -- the project network on this host ----------------------------------------
    def plan_network(self, project, avoid: tuple[str, ...] = ()):
        """The project's network here; its subnet is chosen once and kept in the project's
        state (on a remote host: clear of that host's networks and of `avoid`)."""
        from providers import network

        return network.plan(project, self.conn, self.key, avoid)

    def ensure_network(self, plan, dns: dict[str, str]) -> None:
        """The network, its DNS entries, and (this host's network) the machines' names for
        this host too: `web.<project>.vbox` (providers/hostnames.py)."""
        from providers import network

        network.ensure(self.conn, plan, dns)
        if self.key == "local":
            _host_names(plan.name.removeprefix("vbox-"), dns)

    def remove_network(self, project_id: str) -> bool:
        from providers import network

        removed = network.remove(self.conn, network.network_name(project_id))
        if self.key == "local":
            _host_names(project_id, {})
        return removed


def _host_names(project_id: str, addresses: dict[str, str]) -> None:
    """This host's names of the machines; a user who may not write /etc/hosts goes without."""
    from providers import hostnames

    try:
        hostnames.set_names(project_id, addresses)
    except PermissionError:
        pass


_hosts: dict[str, LibvirtHost] = {}
_hosts_lock = threading.Lock()


def _close_at_exit() -> None:
    # before the interpreter tears the libvirt module down (a connection closed after that
    # prints "Exception ignored in virConnect.__del__")
    close_all()


def host(uri: str, access=None) -> LibvirtHost:
    with _hosts_lock:
        if uri not in _hosts:
            _hosts[uri] = LibvirtHost(uri, access)
        return _hosts[uri]


def local() -> LibvirtHost:
    """This host's system libvirt, which holds the project network of its machines."""
    return host(SYSTEM_URI)


def close_all() -> None:
    for each in list(_hosts.values()):
        each.close()


atexit.register(_close_at_exit)
