#!/usr/bin/env bash
# Prints LXC life-cycle timings (see lifecycle.py); needs root and the debian-12 box.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$here/../.venv/bin/python" "$here/lifecycle.py" --provider lxc "$@"
