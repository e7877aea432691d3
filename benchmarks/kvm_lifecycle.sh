#!/usr/bin/env bash
# Prints KVM life-cycle timings and the accelerator in use (see lifecycle.py).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$here/../.venv/bin/python" "$here/lifecycle.py" --provider kvm "$@"
