#!/usr/bin/env bash
# Prints the cost of a synced folder against the host (see folders.py); needs root and the debian-12 box.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$here/../.venv/bin/python" "$here/folders.py" "$@"
