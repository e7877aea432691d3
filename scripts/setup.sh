#!/usr/bin/env bash
# Sets up this host for vbox: the Python package in a virtualenv, then what vbox needs
# on the host (apt packages, libvirtd, virtlogd, lxcfs) through `vbox doctor --fix`.
#   scripts/setup.sh dev      -> .venv/ in the repository, editable, with the test tools
#   scripts/setup.sh system   -> /opt/vbox/venv, with `env` and `vbox` in /usr/local/bin
# Debian or Ubuntu, as root. Safe to run again: it only does what is missing.
set -euo pipefail

mode=${1:-dev}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '[setup] %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "error: run this as root (vbox builds boxes with debootstrap and runs libvirtd)" >&2
    exit 1
fi

# What building the package needs: Python >= 3.11 with venv, and libvirt's headers for
# libvirt-python (it is only published as source).
need=()
pkgs=(python3 python3-venv python3-dev gcc pkg-config libvirt-dev)
# the tests check vbox's libvirt XML against libvirt's own schema (virt-xml-validate needs
# xmllint), and reach this host's libvirt as a remote host through an sshd of their own
[ "$mode" = dev ] && pkgs+=(libxml2-utils libvirt-clients openssh-server)
# and join machines to Open vSwitch bridges and a bridge of their own (ping, dnsmasq's DHCP)
[ "$mode" = dev ] && pkgs+=(openvswitch-switch iputils-ping dnsmasq-base)
# and build a box as a normal user, in a user namespace of hers (newuidmap, newgidmap)
[ "$mode" = dev ] && pkgs+=(uidmap)
for pkg in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    apt-get update -q
    # openssh-server's package would start the system's sshd (the tests start their own), and
    # openvswitch-switch its daemons: `vbox doctor --fix` below starts them
    guard=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && guard=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" || status=$?
    [ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d
    [ "${status:-0}" -eq 0 ] || exit "$status"
fi

python=${VBOX_PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "error: vbox needs Python 3.11 or newer; $("$python" --version) found" >&2; exit 1; }

case "$mode" in
    dev)
        venv="$repo/.venv"
        spec=("-e" "$repo[test]")
        ;;
    system)
        venv=/opt/vbox/venv
        spec=("$repo")
        ;;
    *)
        echo "usage: $0 dev|system" >&2; exit 2 ;;
esac

[ -x "$venv/bin/python" ] || { say "creating $venv"; "$python" -m venv "$venv"; }
say "installing vbox-cli into $venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "${spec[@]}"

if [ "$mode" = system ]; then
    ln -sf "$venv/bin/vbox" /usr/local/bin/vbox
    ln -sf "$venv/bin/env" /usr/local/bin/env
    say "installed /usr/local/bin/env and /usr/local/bin/vbox"
fi

say "checking the host (vbox doctor --fix)"
"$venv/bin/vbox" --plain doctor --fix
