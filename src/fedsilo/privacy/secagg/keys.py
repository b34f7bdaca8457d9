"""Key agreement and authenticated encryption between silos: X25519, HKDF-SHA256, AES-256-GCM.

Every silo makes two X25519 key pairs per round (Bonawitz et al. 2017, section 4): ``c`` keys,
whose agreed secret encrypts the Shamir shares a silo sends to a peer through the server, and ``s``
keys, whose agreed secret seeds the pairwise mask of the two silos. Keeping them apart means the
server may later learn a dropped silo's ``s`` private key (to remove its masks) without being able
to read any share. Agreed secrets go through HKDF with the round's context and a purpose label,
so a key never serves two purposes or two rounds. Private keys come from the OS CSPRNG.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedsilo.errors import SecAggError

KEY_BYTES = 32
NONCE_BYTES = 12


def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as raw ``(private, public)`` bytes (the private key can then be secret-shared)."""
    private = X25519PrivateKey.generate()
    return private.private_bytes_raw(), private.public_key().public_bytes_raw()


def public_of(private: bytes) -> bytes:
    """The public key of a raw private key: lets the server check a reconstructed key against the advertised one."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def agree(private: bytes, peer_public: bytes, context: bytes, purpose: bytes) -> bytes:
    """A 32-byte key both sides derive alike: HKDF(X25519(private, peer_public)) bound to round and purpose."""
    try:
        shared = X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # wrong length, or a low-order point giving an all-zero secret
        raise SecAggError(
            f"key agreement failed: {exc}", "a peer advertised a malformed public key: it is left out"
        ) from None
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=purpose + b"\x00" + context).derive(shared)


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """AES-GCM encrypt with a random nonce; ``associated`` (sender, receiver, round) is authenticated, not sent."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes) -> bytes | None:
    """The plaintext, or ``None`` when the ciphertext, its tag or the associated data was tampered with."""
    if len(sealed) < NONCE_BYTES + 16:
        return None
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except InvalidTag:
        return None
