"""A machine's identity for a cloud image: a NoCloud seed (cloud-init's "cidata" ISO).

A cloud image (a qcow2 disk with cloud-init, as Debian and Ubuntu publish them) takes
its user, keys, name and network from its first boot's datasource. vbox gives it a
small read-only ISO 9660 volume labelled `cidata` with three files:

- meta-data: the instance id (the machine's object name: the same at every boot, so
  cloud-init sets the machine up once) and its host name;
- user-data: the box's user (vbox by default) with sudo and the project's key, the SSH
  host key vbox made for the machine (and no other: `ssh_deletekeys`, no generated
  keys), no password logins;
- network-config (version 2): DHCP on the interface with the machine's MAC, which the
  project network's reservation answers with the machine's address.

All three are JSON, which YAML readers take as it is: no value needs quoting by hand,
and nothing in one can start another key. The volume is 0600 (it holds the host key).
"""

from __future__ import annotations

import io
import json

from providers.base import MachineSpec

IDENTITY = "cloud-init"  # a box's `identity` when it takes its identity this way
VOLUME_SUFFIX = ".seed"


def seed_files(spec: MachineSpec, mac: str) -> dict[str, str]:
    short = spec.machine.hostname.split(".")[0]
    meta = {"instance-id": spec.object_name, "local-hostname": short}
    user = {
        "hostname": short,
        "fqdn": spec.machine.hostname,
        "users": [{"name": spec.user, "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL",
                   "lock_passwd": True, "ssh_authorized_keys": [spec.authorized_key]}],
        "ssh_deletekeys": True,
        "ssh_genkeytypes": ["ed25519"],  # the one it is given: nothing to make
        "ssh_keys": {"ed25519_private": spec.host_key_private, "ed25519_public": spec.host_key_public},
        "ssh_pwauth": False,
        "disable_root": True,
    }
    network = {"version": 2, "ethernets": {"eth0": {"match": {"macaddress": mac}, "set-name": "eth0",
                                                     "dhcp4": True}}}
    return {"meta-data": json.dumps(meta, indent=1) + "\n",
            "user-data": "#cloud-config\n" + json.dumps(user, indent=1) + "\n",
            "network-config": json.dumps(network, indent=1) + "\n"}


def seed_image(spec: MachineSpec, mac: str) -> bytes:
    """The NoCloud ISO (Rock Ridge and Joliet names, volume label cidata)."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for index, (name, text) in enumerate(sorted(seed_files(spec, mac).items())):
        data = text.encode()
        iso.add_fp(io.BytesIO(data), len(data), f"/FILE{index}.;1", rr_name=name, joliet_path=f"/{name}")
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()
