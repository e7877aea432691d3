#!/usr/bin/env bash
# README command 2: set this host up, then run the whole test suite (unit and
# integration: real libvirtd, LXC, debootstrap).
#
# With no arguments, in two passes: every test but the `exclusive` ones on
# $VBOX_TEST_WORKERS pytest-xdist workers (2 by default; a file's tests stay on one
# worker), then the `exclusive` ones (they restart libvirtd, or count what every
# machine of the host has) alone. Most integration tests wait on a guest's boot or the
# mirror, so two at once use the host's two cores better than one; more would make TCG
# guests compete for them.
#
# Extra arguments go to one plain pytest run instead, e.g.
# `scripts/test.sh -m "not integration"` for the quick unit tests only, or
# `scripts/test.sh -m "not slow"` to leave out the tests that take minutes.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/scripts/setup.sh" dev
cd "$repo"
if [ $# -gt 0 ]; then
    exec .venv/bin/python -m pytest --durations=30 "$@"
fi
rc=0
.venv/bin/python -m pytest -n "${VBOX_TEST_WORKERS:-2}" --dist loadfile -m "not exclusive" --durations=30 || rc=$?
echo "== the exclusive tests, alone =="
.venv/bin/python -m pytest -m exclusive --durations=10 || rc=$?
exit "$rc"
