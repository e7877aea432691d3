"""SSH keys made by vbox: the project's client key and each machine's host keys.

Generated with `cryptography` (already there as paramiko's dependency) in OpenSSH
formats, so no ssh-keygen run is needed.
"""

from __future__ import annotations


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

