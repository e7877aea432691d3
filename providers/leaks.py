"""Anything vbox made that is still on the host: what `destroy` must leave nothing of.

Used by `env doctor --leaks` and at the end of every integration test.
"""

from __future__ import annotations

from vbox_cli.errors import VboxError


def find(project_id: str | None = None) -> list[str]:
    """Leftovers of one project (by id), or of every vbox project."""
    import libvirt

    from providers.hosts import SYSTEM_URI, open_libvirt
    from providers.registry import local_providers

    prefix = f"vbox-{project_id}-" if project_id else "vbox-"
    network = f"vbox-{project_id}" if project_id else None
    found = []
    for name, provider, why in local_providers():
        if provider is None:
            found.append(f"{name} machines could not be listed: {why}")
            continue
        found += provider.leaks(prefix)
    from providers.hostnames import leaks as name_leaks
    from providers.ports import leaks as port_leaks

    found += name_leaks(project_id)
    from vbox_cli.folderwatch import leaks as watcher_leaks

    found += watcher_leaks(project_id)
    from vbox_cli.sshmux import leaks as master_leaks

    found += master_leaks(project_id)
    if project_id is None:  # a bridge may serve several projects: no project's own leftover
        from providers.ovs import leaks as bridge_leaks

        found += bridge_leaks()

    try:
        found += port_leaks(project_id)
    except VboxError as exc:
        found.append(f"forwarded ports could not be listed: {exc.message}")
    conn = open_libvirt(SYSTEM_URI)
    try:
        for net in conn.listAllNetworks():
            name = net.name()
            if name == network or (network is None and name.startswith("vbox-")):
                found.append(f"libvirt network {name}")
        for dom in conn.listAllDomains():
            if dom.name().startswith(prefix):
                found.append(f"libvirt domain {dom.name()}")
        for pool in conn.listAllStoragePools():
            try:
                volumes = pool.listAllVolumes() if pool.isActive() else []
            except libvirt.libvirtError:
                continue
            found += [f"libvirt volume {v.name()} in pool {pool.name()}" for v in volumes
                      if v.name().startswith(prefix)]
    finally:
        conn.close()
    return found
