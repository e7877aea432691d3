"""A KVM machine's libvirt domain: the XML of a new machine (its kernel or bootloader, a
Xen host's multiboot modules, its credential and seed volumes, user-mode networking in
session mode), the limits it may grow to live, and the extra networks it joins."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from providers.base import MachineSpec
from providers.libvirt_domain import domain_uuid, mac_address
from providers.render import render

__all__ = ["limits", "render_domain", "set_resources", "apply_networks", "NET_KEY"]


def limits(spec: MachineSpec, host: tuple[int, int]) -> tuple[int, int, bool]:
    """(maximum memory in bytes, maximum vCPUs, balloon) of a machine on a host of
    (memory bytes, CPUs): what `env up` can give a running machine without a restart.
    Memory up to twice the Envfile's (at most the host's), through a virtio balloon; as
    many vCPUs as the host has. A box that boots Xen has no balloon: Xen would not give
    back what the balloon asks for, and would touch all of it at boot."""
    memory = spec.machine.memory
    if spec.box.meta.boot.hypervisor:
        return memory, spec.machine.cpus, False
    return max(memory, min(2 * memory, host[0])), max(spec.machine.cpus, host[1]), True


def render_domain(spec: MachineSpec, domain_type: str, paths: dict[str, str], volume: str, credential: str,
                  ssh_port: int | None = None, console_log: bool = True, seed: str | None = None,
                  host: tuple[int, int] = (0, 0)) -> str:
    """The domain of a new machine; `credential` is the path of its identity file (fw_cfg),
    `seed` the volume of a cloud image's NoCloud seed (a second, read-only disk).
    `console_log`: the console is logged to the project's .vbox/console/ (this host only).
    `host`: its host's memory (bytes) and CPUs, which bound what it may grow to live."""
    from providers.guest import RESOLVER_WORD, static_resolver
    from providers.storage import POOL

    short = spec.machine.hostname.split(".")[0]
    linux_cmdline = (f"root=LABEL={spec.box.meta.boot.root_label} rw console=ttyS0 "
                     f"systemd.hostname={short} net.ifnames=0")
    if static_resolver(spec):  # not in session mode: no project network there (QEMU's own DNS)
        linux_cmdline += f" {RESOLVER_WORD}"
    # a box with no kernel beside its disk (a Vagrant box) boots from the disk's own bootloader
    kernel, initrd, cmdline = paths.get("kernel", ""), paths.get("initrd", ""), linux_cmdline
    qemu_args = []
    if ssh_port:
        # session mode: user-mode networking, SSH forwarded from 127.0.0.1
        qemu_args += ["-netdev", f"user,id=vboxnet,hostname={short},hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
                      "-device", f"virtio-net-pci,netdev=vboxnet,mac={mac_address(spec.object_name)},"
                                 "bus=pci.0,addr=0x1e"]
    if "hypervisor" in paths:
        # A Xen host: Xen is the multiboot kernel; the dom0 kernel (with its command line)
        # and its initrd are multiboot modules, given to QEMU itself (libvirt's <initrd>
        # takes one file). dom0's console is Xen's (hvc0), on com1.
        dom0_mem = min(spec.machine.memory // 2, 2048 * 1024**2) // 1024**2
        kernel, initrd = paths["hypervisor"], ""
        modules = f"{paths['kernel']} {linux_cmdline.replace('console=ttyS0', 'console=hvc0')},{paths['initrd']}"
        qemu_args += ["-initrd", modules]
        cmdline = (f"dom0_mem={dom0_mem}M,max:{dom0_mem}M console=com1 com1=115200,8n1 "
                   f"dom0_max_vcpus={spec.machine.cpus}")
        if domain_type == "qemu":
            # Under TCG: AMD's SVM (HVM guests), with Intel's vendor string. Xen clears SEP
            # from its feature words on AMD CPUs, and TCG has no VME; with neither, libvirt's
            # Xen driver in dom0 cannot name the host CPU ("Cannot find suitable CPU model
            # for given data") and will not start. As QEMU's own option: libvirt drops the
            # vendor of a custom CPU model.
            qemu_args += ["-cpu", "qemu64,vendor=GenuineIntel,svm=on"]
    memory_max, cpus_max, balloon = limits(spec, host)
    return render(
        "domain.xml.j2",
        domain_type=domain_type, name=spec.object_name, uuid=domain_uuid(spec.object_name),
        project=spec.project_id, machine=spec.machine.name,
        memory_kib=spec.machine.memory // 1024, cpus=spec.machine.cpus,
        memory_max_kib=memory_max // 1024, cpus_max=cpus_max, balloon=balloon,
        credential=credential,
        kernel=kernel, initrd=initrd, cmdline=cmdline, qemu_args=qemu_args,
        pool=POOL, volume=volume, network=spec.network, mac=mac_address(spec.object_name),
        console_log=spec.console_log if console_log else "", ssh_port=ssh_port, seed=seed,
    )


def set_resources(root: ET.Element, spec: MachineSpec, host: tuple[int, int]) -> None:
    """A domain's definition (parsed) given the spec's memory and vCPUs, with the maximum of
    each it may grow to live and its balloon (a machine made by an earlier vbox gets it)."""
    memory_max, cpus_max, balloon = limits(spec, host)
    for tag, value in (("memory", memory_max), ("currentMemory", spec.machine.memory)):
        element = root.find(tag)
        if element is None:
            element = ET.SubElement(root, tag)
        element.text, element.attrib = str(value // 1024), {"unit": "KiB"}
    vcpu = root.find("vcpu")
    vcpu.text = str(cpus_max)
    vcpu.set("current", str(spec.machine.cpus))
    devices = root.find("devices")
    for old in devices.findall("memballoon"):
        devices.remove(old)
    ET.SubElement(devices, "memballoon", model="virtio" if balloon else "none")


NET_KEY = "vbox.net="  # the kernel command line's word for a static address of an extra network


def apply_networks(root: ET.Element, spec: MachineSpec) -> None:
    """Make a domain's definition (parsed) join the spec's extra networks, and no others:
    a bridge interface each (an Open vSwitch port with its VLAN tag, which libvirt sets at
    every start); a static address goes on the kernel command line, where the box's
    vbox-network.service gives it to networkd (DHCP otherwise)."""
    devices = root.find("devices")
    for element in devices.findall("interface"):
        mac = element.find("mac")
        if element.get("type") == "bridge" and mac is not None and mac.get("address", "").startswith("52:54:01:"):
            devices.remove(element)
    cmdline = root.find("os/cmdline")
    if cmdline is not None:  # none when it boots from its disk's bootloader: no static address then
        words = [w for w in (cmdline.text or "").split() if not w.startswith(NET_KEY)]
        words += [f"{NET_KEY}{net.mac},{net.address}" for net in spec.networks if net.address]
        cmdline.text = " ".join(words)
    last = max((i for i, e in enumerate(devices) if e.tag in ("disk", "interface")), default=-1)
    for offset, net in enumerate(spec.networks, start=1):
        interface = ET.Element("interface", type="bridge")
        ET.SubElement(interface, "source", bridge=net.bridge)
        ET.SubElement(interface, "mac", address=net.mac)
        ET.SubElement(interface, "model", type="virtio")
        if net.kind == "ovs":
            ET.SubElement(interface, "virtualport", type="openvswitch")
            if net.vlan:
                ET.SubElement(ET.SubElement(interface, "vlan"), "tag", id=str(net.vlan))
        devices.insert(last + offset, interface)
