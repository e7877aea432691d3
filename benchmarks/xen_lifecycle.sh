#!/usr/bin/env bash
# Prints Xen guest life-cycle timings on the emulated Xen host (see xen_lifecycle.py).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$here/../.venv/bin/python" "$here/xen_lifecycle.py" "$@"
