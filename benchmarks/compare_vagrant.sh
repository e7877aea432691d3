#!/usr/bin/env bash
# vbox beside Vagrant on this machine, verb by verb (benchmarks/compare_vagrant.py says how):
#   benchmarks/compare_vagrant.sh lxc|kvm [rounds]
# Installs Debian's vagrant and the plugin for the provider if missing, and vbox's own
# set-up (scripts/setup.sh dev) if this clone has none. Prints a Markdown table.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
provider=${1:?usage: $0 lxc|kvm [rounds]}
rounds=${2:-3}
case "$provider" in
    lxc) plugin=vagrant-lxc ;;
    kvm) plugin=vagrant-libvirt ;;
    *) echo "usage: $0 lxc|kvm [rounds]" >&2; exit 2 ;;
esac
if [ "$(id -u)" != 0 ]; then
    echo "error: run this as root (Vagrant's providers and vbox's machines here)" >&2
    exit 1
fi
missing=()
for package in vagrant "$plugin"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "[compare] installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
fi
[ -x "$repo/.venv/bin/python" ] || bash "$repo/scripts/setup.sh" dev >&2
exec "$repo/.venv/bin/python" "$repo/benchmarks/compare_vagrant.py" "$provider" --rounds "$rounds"
