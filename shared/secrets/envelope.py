"""Envelope encryption of private keys at rest (DESIGN.md invariant 4).

Two layers, both AES-256-GCM:

- the **root key** (``KMS_ROOT_KEY`` / ``KMS_ROOT_KEY_FILE``, 32 bytes, never stored in the database)
  wraps one **data key** per project; the associated data binds a wrapped key to its project, so a
  wrapped key copied to another project's row does not unwrap;
- a project's data key encrypts each private key; the associated data binds the ciphertext to its
  table and row, so a ciphertext copied to another row does not decrypt.

CA private keys go through the same two layers under a second root key, the **CA root key**
(``KMS_CA_ROOT_KEY`` / ``KMS_CA_ROOT_KEY_FILE``, workers only), which wraps each project's separate CA
data key; that wrapping is also bound to its purpose (``ca-root``).

Blob layout, the same for both layers: ``version (1 byte) || nonce (12 bytes) || ciphertext || tag``.
The version byte lets the format evolve (another cipher, a key id) while old rows stay readable; it
is also part of the associated data, so flipping it is detected like any other tampering.

Any failure (wrong key, wrong row, tampering, truncation) raises ``EnvelopeError``: GCM either
authenticates the whole blob or returns nothing, so garbage is never handed to a key parser.
Messages name the row or project, never key material.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import ConfigurationError

KEY_BYTES: Final = 32  # AES-256
NONCE_BYTES: Final = 12  # GCM's native nonce size; random nonces are safe far beyond our volume
_TAG_BYTES: Final = 16
FORMAT_V1: Final = 0x01
_SUPPORTED_VERSIONS: Final = frozenset({FORMAT_V1})

# Domain separation: a wrapped data key and an encrypted private key can never be mistaken for one
# another, even under the same key, because their associated data start differently.
_DATA_KEY_CONTEXT: Final = b"kms-pki/data-key"
_PRIVATE_KEY_CONTEXT: Final = b"kms-pki/private-key"


class EnvelopeError(Exception):
    """A ciphertext did not authenticate (wrong key, wrong row or project, tampered, or malformed).

    Not a ``KmsError``: the caller did nothing wrong; this is a server-side integrity failure.
    """


def load_root_key(b64: str | None, file: Path | None, *, variable: str = "KMS_ROOT_KEY",
                  what: str = "root key") -> bytes:
    """The 32-byte root key from ``KMS_ROOT_KEY`` (standard base64) or ``KMS_ROOT_KEY_FILE``.

    The file holds either the base64 text (a trailing newline is fine) or exactly 32 raw bytes.
    Exactly one source must be given: two could disagree, and guessing which one wins would make a
    misconfiguration encrypt new keys under a key the operator did not mean. ``variable`` and ``what``
    name another root key of the same format (the CA root key) in the messages.
    """
    if b64 is not None and file is not None:
        raise ConfigurationError(f"set only one of {variable} and {variable}_FILE, not both")
    if b64 is not None:
        return _decode_root_key(b64.encode("ascii", errors="replace"), source=variable)
    if file is not None:
        try:
            content = file.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"{variable}_FILE {file} cannot be read: {exc.strerror}") from exc
        if len(content) == KEY_BYTES:
            return content
        return _decode_root_key(content, source=f"{variable}_FILE {file}")
    raise ConfigurationError(f"no {what}: set {variable} (base64 of 32 bytes) or {variable}_FILE")


def _decode_root_key(text: bytes, *, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        # The value itself is never echoed: it is (or is meant to be) the root key.
        raise ConfigurationError(f"{source} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigurationError(f"{source} must decode to {KEY_BYTES} bytes, got {len(key)}")
    return key


def new_data_key() -> bytes:
    """A fresh 32-byte data key from the OS CSPRNG."""
    return AESGCM.generate_key(bit_length=8 * KEY_BYTES)


def _check_key(key: bytes, what: str) -> None:
    if len(key) != KEY_BYTES:
        raise ValueError(f"{what} must be {KEY_BYTES} bytes, got {len(key)}")


def _seal(key: bytes, plaintext: bytes, context: bytes) -> bytes:
    header = bytes([FORMAT_V1])
    nonce = os.urandom(NONCE_BYTES)
    return header + nonce + AESGCM(key).encrypt(nonce, plaintext, header + context)


def _open(key: bytes, blob: bytes, context: bytes, what: str) -> bytes:
    if len(blob) < 1 + NONCE_BYTES + _TAG_BYTES:
        raise EnvelopeError(f"{what} is truncated ({len(blob)} bytes)")
    version = blob[0]
    if version not in _SUPPORTED_VERSIONS:
        raise EnvelopeError(f"{what} has unknown format version {version}")
    nonce, ciphertext = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, blob[:1] + context)
    except InvalidTag:
        raise EnvelopeError(
            f"{what} does not authenticate: wrong key, moved from another row, or tampered with"
        ) from None


def _data_key_context(project_id: str, purpose: str | None) -> bytes:
    if not project_id:
        raise ValueError("project_id must not be empty")
    if purpose is not None and (not purpose or "|" in purpose):
        raise ValueError(f"invalid data key purpose {purpose!r}")
    # No purpose: the project's first data key, bound as it was before purposes existed.
    return _DATA_KEY_CONTEXT + b"|" + project_id.encode("utf-8") + (b"|" + purpose.encode() if purpose else b"")


def _row_context(table: str, row_id: str) -> bytes:
    # ":" separates table from row; a table name containing it could make two bindings collide.
    if not table or ":" in table or not row_id:
        raise ValueError(f"invalid binding table={table!r} row_id={row_id!r}")
    return _PRIVATE_KEY_CONTEXT + b"|" + f"{table}:{row_id}".encode()


def wrap_data_key(root_key: bytes, data_key: bytes, *, project_id: str, purpose: str | None = None) -> bytes:
    """The data key encrypted under the root key, bound to ``project_id`` (and ``purpose``, when given:
    a project's CA data key never unwraps as its other data key, even under the same root key)."""
    _check_key(root_key, "root key")
    _check_key(data_key, "data key")
    return _seal(root_key, data_key, _data_key_context(project_id, purpose))


def unwrap_data_key(root_key: bytes, wrapped: bytes, *, project_id: str, purpose: str | None = None) -> bytes:
    """The project's data key; ``EnvelopeError`` if the root key, the project or the purpose does not match."""
    _check_key(root_key, "root key")
    data_key = _open(root_key, wrapped, _data_key_context(project_id, purpose), f"data key of project {project_id}")
    if len(data_key) != KEY_BYTES:  # authenticated, so only a bug could cause this; still refuse it
        raise EnvelopeError(f"data key of project {project_id} has {len(data_key)} bytes")
    return data_key


def encrypt_private_key(data_key: bytes, plaintext: bytes, *, table: str, row_id: str) -> bytes:
    """A private key (PKCS#8 DER) encrypted under the project's data key, bound to ``table:row_id``.

    The row id must be known before the insert (the service uses client-generated UUIDs) because
    it is part of the associated data.
    """
    _check_key(data_key, "data key")
    return _seal(data_key, plaintext, _row_context(table, row_id))


def decrypt_private_key(data_key: bytes, blob: bytes, *, table: str, row_id: str) -> bytes:
    """The plaintext private key; ``EnvelopeError`` unless ``blob`` was made for this row and key."""
    _check_key(data_key, "data key")
    return _open(data_key, blob, _row_context(table, row_id), f"private key of {table} {row_id}")


def rewrap_data_keys(old_root: bytes, new_root: bytes, wrapped: Mapping[str, bytes], *,
                     purpose: str | None = None) -> dict[str, bytes]:
    """Root key rotation: every project's data key (``{project_id: wrapped}``) rewrapped under ``new_root``.

    All or nothing: if one key does not unwrap under ``old_root`` it raises ``EnvelopeError`` naming
    the project and returns nothing, so the caller never writes back a half-rotated set. Private-key
    ciphertexts are untouched; only the data keys change wrapping.
    """
    _check_key(new_root, "new root key")
    return {
        project_id: wrap_data_key(
            new_root, unwrap_data_key(old_root, blob, project_id=project_id, purpose=purpose),
            project_id=project_id, purpose=purpose,
        )
        for project_id, blob in wrapped.items()
    }
