#!/usr/bin/env bash
# README command 1: set this host up, install `env` and `vbox`, build the debian-12
# box, and bring up the machines of Envfile.example in a demo project folder. The
# machines stay up: `cd ~/vbox-demo && env ssh web`, then `env destroy`.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
demo=${VBOX_DEMO_DIR:-$HOME/vbox-demo}

bash "$repo/scripts/setup.sh" system
export PATH=/usr/local/bin:$PATH

echo "[demo] building the debian-12 box (cached after the first time)"
env box build debian-12
env box list

mkdir -p "$demo"
cp "$repo/Envfile.example" "$demo/Envfile"
cd "$demo"
echo "[demo] project folder: $demo"
env validate
env up
env status
env port
echo "[demo] env ssh web -- cat /var/www-index.html"
env ssh web -- cat /var/www-index.html
echo "[demo] the machines are up; try: cd $demo && env ssh db   (env destroy removes them)"
