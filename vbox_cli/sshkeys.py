"""SSH keys made by vbox: the project's client key and each machine's host keys.

Generated with `cryptography` (already there as paramiko's dependency) in OpenSSH
formats, so no ssh-keygen run is needed.
"""

from __future__ import annotations

import base64
import hashlib


def new_ed25519(comment: str) -> tuple[str, str]:
    """(private key in OpenSSH PEM format, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, f"{public.decode()} {comment}"


def fingerprint(public_line: str) -> str:
    """SHA256:... as ssh-keygen -l prints it."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
