"""What a running KVM machine takes without a restart: memory through its balloon, vCPUs
plugged in, its disk grown (and the root file system in it with the commands returned)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from providers.base import LiveChange, MachineSpec

# In the machine, once its disk grew: the root file system (ext4 or XFS) grown with it;
# first its partition, where it is on one and growpart is there (a cloud image's).
GROW_ROOT = """set -e
dev=$(findmnt -no SOURCE /)
part=$(cat /sys/class/block/${dev#/dev/}/partition 2>/dev/null || true)
if [ -n "$part" ]; then
  disk=/dev/$(basename "$(readlink -f /sys/class/block/${dev#/dev/}/..)")
  command -v growpart >/dev/null || { echo "growpart is missing: $dev not grown" >&2; exit 1; }
  growpart "$disk" "$part" || [ $? = 1 ]
fi
case $(findmnt -no FSTYPE /) in
  xfs) xfs_growfs / ;;
  *) resize2fs "$dev" ;;
esac"""


def change_live(dom, spec: MachineSpec, was: dict, label: str) -> LiveChange:
    """Memory through the balloon (up or down) up to the maximum it started with, vCPUs
    plugged in up to the host's (taken out at a restart), the disk grown (never shrunk)
    and its file system with it (in the machine, by the commands returned)."""
    import libvirt

    from vbox_cli.envfile.types import format_size

    live = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
    change = LiveChange([], [], [], [], {})
    root = ET.fromstring(dom.XMLDesc(0))
    if "memory" in was:
        wanted, top = spec.machine.memory, dom.maxMemory() * 1024
        step = f"memory {format_size(was['memory'])} -> {format_size(wanted)}"
        if root.find("devices/memballoon[@model='virtio']") is None:
            change.later.append(f"{step}: it has no memory balloon (made by an earlier vbox, or it boots Xen)")
        elif wanted > top:
            change.later.append(f"{step}: above the {format_size(top)} it can grow to until it starts again")
        else:
            dom.setMemoryFlags(wanted // 1024, live)
            change.done.append(step)
            change.applied["memory"] = wanted
    if "cpus" in was:
        wanted, top = spec.machine.cpus, dom.maxVcpus()
        step = f"cpus {was['cpus']} -> {wanted}"
        if wanted > top:
            change.later.append(f"{step}: above the {top} it can have until it starts again")
        elif wanted < was["cpus"]:  # the guest must let a vCPU go; under TCG longer than libvirt waits (5 s)
            change.later.append(f"{step}: vCPUs are taken out of a {label} when it starts again")
        else:
            try:
                dom.setVcpusFlags(wanted, live)
                change.done.append(step)
                change.applied["cpus"] = wanted
                change.guest.append("for c in /sys/devices/system/cpu/cpu[0-9]*/online; do "
                                    "[ \"$(cat $c)\" = 1 ] || echo 1 > $c; done")
            except libvirt.libvirtError as exc:
                change.later.append(f"{step}: {exc.get_error_message()}")
    if "disk" in was:
        wanted = spec.machine.disk
        step = f"disk {format_size(was['disk'])} -> {format_size(wanted)}"
        if wanted < was["disk"]:
            change.refused.append(f"{step}: a disk does not shrink (`env destroy` and `env up` make it anew)")
        else:
            from providers.migration import own_disks

            target = own_disks(root, f"{spec.object_name}.qcow2")[0].find("target").get("dev")
            try:
                dom.blockResize(target, wanted, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
                change.done.append(step)
                change.applied["disk"] = wanted
                change.guest.append(GROW_ROOT)
            except libvirt.libvirtError as exc:  # an overlay made by an earlier vbox (qcow2 v2) with snapshots
                change.refused.append(f"{step}: {exc.get_error_message()}")
    return change
