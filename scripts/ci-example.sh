#!/usr/bin/env bash
# What a CI job does with vbox (docs/ci.md), runnable here:
#
#   bash scripts/ci-example.sh PROJECT_DIR 'COMMAND IN THE MACHINE' [MACHINE]
#
# 1. vbox installed (scripts/setup.sh system, unless `env` is vbox's already);
# 2. the box store restored from a cache keyed by the boxes Envfile.lock names
#    (VBOX_CI_CACHE, default /var/cache/vbox/ci: a folder of `env box export` archives,
#    where a CI service keeps its cache);
# 3. `env up --locked --events` (the events in PROJECT_DIR/vbox-events.ndjson);
# 4. the project's tests in a machine: `env ssh MACHINE -- COMMAND` (default: the first);
# 5. `env destroy -f`, always: on success, on failure, and when the job is cancelled
#    (CI services send SIGTERM, then SIGKILL after a grace period: the trap runs on the
#    first). Exits with the tests' status, or vbox's when up failed.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
project=$(cd "${1:?usage: ci-example.sh PROJECT_DIR COMMAND [MACHINE]}" && pwd)
command=${2:?usage: ci-example.sh PROJECT_DIR COMMAND [MACHINE]}
machine=${3:-}
cache=${VBOX_CI_CACHE:-/var/cache/vbox/ci}
export CI=${CI:-true}  # no prompts, no live views: plain lines

say() { printf '[ci] %s\n' "$*"; }

# 1. vbox
if [ -x "$here/.venv/bin/vbox" ]; then
    vbox="$here/.venv/bin/vbox"   # this checkout's, as the tests run it
else
    bash "$here/scripts/setup.sh" system
    vbox=/usr/local/bin/vbox
fi
cd "$project"
[ -f Envfile.lock ] || { say "no Envfile.lock in $project: run \`env lock\` and commit it"; exit 2; }

# 2. boxes: the cache key is the set of box digests the lock names
digests=$(sed -n 's/^box_digest = "sha256:\([0-9a-f]*\)"$/\1/p' Envfile.lock | sort -u)
key=$(printf '%s\n' "$digests" | sha256sum | cut -c1-16)
mkdir -p "$cache/$key"
for archive in "$cache/$key"/*.box; do
    [ -e "$archive" ] || continue
    say "restoring $(basename "$archive") from the cache ($key)"
    "$vbox" --plain box import "$archive" >/dev/null
done

cleanup() {
    status=$?
    trap - EXIT INT TERM
    say "destroying the machines"
    "$vbox" --plain destroy -f >/dev/null 2>&1 || say "destroy failed: see \`env doctor --leaks\`"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# 3. up, exactly as locked
say "env up --locked"
"$vbox" --plain up --locked --events > vbox-events.ndjson
tail -n 1 vbox-events.ndjson

# the boxes the lock names, into the cache for the next job (a CI service saves the folder)
sed -n 's/^box = "\(.*\)"$/\1/p;s/^box_version = "\(.*\)"$/\1/p' Envfile.lock | paste - - | sort -u |
while read -r name version; do
    file="$cache/$key/${name//\//@}-$version.box"
    [ -e "$file" ] || "$vbox" --plain box export "$name" --version "$version" -o "$file" >/dev/null
done

# 4. the project's tests
[ -n "$machine" ] || machine=$(sed -n 's/^\[machines\."\(.*\)"\]$/\1/p' Envfile.lock | head -1)
say "env ssh $machine -- $command"
"$vbox" --plain ssh "$machine" -- "$command"
