#!/usr/bin/env bash
# Prints LXC life-cycle timings (see lxc_lifecycle.py); needs root and the debian-12 box.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$here/../.venv/bin/python" "$here/lxc_lifecycle.py" "$@"
