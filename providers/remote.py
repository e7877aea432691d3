"""Where a machine's libvirt is: this host, another host, or a machine of the same Envfile.

A machine's `host` is a libvirt URI. When the URI's host names a machine of the same
Envfile (`xen+ssh://xenhost/system`), vbox reaches that machine's libvirt over SSH as
the box's user with the project's own key, and checks its host key against the one vbox
made for it: the URI becomes libvirt's libssh2 transport with `keyfile` and `known_hosts`
(libssh2, not libssh: with libvirt 9.0 and libssh 0.10, Debian 12's, a call whose reply is
more than a few KiB, `getCapabilities` for one, never returns over libssh).
Any other remote URI is used as written: libvirt, and vbox's own SSH through that host,
then use the user's SSH setup, or the `keyfile` and `known_hosts` the URI names.

The guests of a remote host sit on that host's project network: SSH to them goes
through the host (`via`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from vbox_cli.errors import VboxError


@dataclass(frozen=True)
class HostAccess:
    uri: str  # what libvirt connects to
    shown: str  # what the Envfile says, for messages
    machine: str | None = None  # the Envfile's machine that is the host, if one is
    pending: bool = False  # that machine has no address yet (it is not up)
    ssh_host: str | None = None  # SSH to the guests goes through this host
    ssh_port: int = 22
    ssh_user: str | None = None
    key_file: str | None = None  # a host vbox did not make: the URI's keyfile, else the user's keys
    known_hosts: str | None = None  # ... and its known_hosts, else the user's

    @property
    def remote(self) -> bool:
        return self.ssh_host is not None

    @property
    def key(self) -> str:
        """A short, stable name for this host, used to keep its network's subnet."""
        return self.machine or self.shown


def resolve(uri: str | None, default: str, project, machines: dict) -> HostAccess:
    """The access to the host a machine names (`uri`), or to this host (`default`)."""
    if not uri:
        return HostAccess(uri=default, shown=default)
    from urllib.parse import urlencode

    from vbox_cli.envfile.types import HOST_URI_PARAMETERS, host_uri_parameters
    from vbox_cli.files import project_file

    parts = urlsplit(uri)
    driver = parts.scheme.partition("+")[0]
    # checked again here (the Envfile was checked at load, but a cached one is not checked
    # again): a path parameter becomes the absolute path of that file of the project
    try:
        params = [(name, str(project_file(project.folder, value)) if HOST_URI_PARAMETERS[name] is None else value)
                  for name, value in host_uri_parameters(uri)]
    except ValueError as exc:
        raise VboxError(f"host {uri.split('?')[0]}: {exc}", hint="run `env validate`") from None
    query = urlencode(params, safe="/,")
    uri = parts._replace(query=query).geturl()
    if not parts.hostname:
        return HostAccess(uri=uri, shown=uri)
    if parts.hostname in machines:
        record = project.machine_state(parts.hostname)
        if not record.get("address") or not record.get("host_key"):
            return HostAccess(uri=uri, shown=uri, machine=parts.hostname, pending=True)
        user = parts.username or record.get("user", "vbox")
        address, port = record["address"], record.get("port", 22)
        # libssh2 refuses a host key that is absent from known_hosts or differs from it
        # vbox's own key and known_hosts; of the Envfile's parameters, only those vbox does not set
        own = (f"keyfile={quote(str(project.client_key), safe='/')}"
               f"&known_hosts={quote(str(project.known_hosts), safe='/')}&sshauth=privkey")
        kept = urlencode([(n, v) for n, v in params if n in ("mode", "proxy", "no_tty")])
        real = f"{driver}+libssh2://{user}@{address}:{port}{parts.path or '/system'}?{own}" + \
            (f"&{kept}" if kept else "")
        return HostAccess(uri=real, shown=uri, machine=parts.hostname, ssh_host=address, ssh_port=port,
                          ssh_user=user)
    given = dict(params)
    return HostAccess(uri=uri, shown=uri.split("?")[0], ssh_host=parts.hostname, ssh_port=parts.port or 22,
                      ssh_user=parts.username, key_file=given.get("keyfile"), known_hosts=given.get("known_hosts"))


MIGRATED = "migrated_to"  # a machine's record: the host `env migrate` moved it to (a URI, as `host` takes)


def machine_access(project, machines: dict, name: str) -> HostAccess | None:
    """Where the libvirt of machine `name` is, for providers whose machines may be on
    another host; None: this host, the provider's own default (an LXC machine; a KVM
    machine without `host`). A machine `env migrate` moved is where it moved it. `machines` holds Machine models or the cached settings
    dicts of `env status` and `env ssh`."""
    from providers.registry import info

    provider, host = setting(machines[name], "provider"), setting(machines[name], "host")
    moved = project.machine_state(name).get(MIGRATED)
    if isinstance(moved, str):  # `env migrate` put it elsewhere than the Envfile says: it is there
        host = moved
    entry = info(provider)
    if isinstance(moved, str) and entry.moved_schemes:  # an LXC machine on another host's libvirt LXC
        if moved == entry.home_uri:
            return None
        if urlsplit(moved).scheme.partition("+")[0] not in entry.moved_schemes:  # .vbox/ is the project's
            raise VboxError(f"{name}: its record says it moved to {moved.split('?')[0]}, which is not "
                            f"an {' or '.join(entry.moved_schemes)} host",
                            hint="`env destroy` it, or fix .vbox/state.json")
        return resolve(moved, "", project, machines)
    if not entry.remote or (not host and entry.default_uri is None):
        return None
    return resolve(host, entry.default_uri, project, machines)


def setting(machine, key: str):
    """A machine's setting, from a Machine model or a cached settings dict."""
    return machine.get(key) if isinstance(machine, dict) else getattr(machine, key, None)
