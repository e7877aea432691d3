#!/usr/bin/env bash
# Prints CLI start-up timings (see cli.py).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$here/../.venv/bin/python" "$here/cli.py" "$@"
