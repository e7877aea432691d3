#!/usr/bin/env bash
# README command 2: set this host up, then run the whole test suite (unit and
# integration: real libvirtd, LXC, debootstrap). Extra arguments go to pytest,
# e.g. `scripts/test.sh -m "not integration"` for the quick unit tests only.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/scripts/setup.sh" dev
cd "$repo"
exec .venv/bin/python -m pytest --durations=30 "$@"
