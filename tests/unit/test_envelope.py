"""Envelope encryption of private keys at rest (DESIGN.md invariant 4)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from shared.errors import ConfigurationError
from shared.secrets.envelope import (
    EnvelopeError,
    decrypt_private_key,
    encrypt_private_key,
    load_root_key,
    new_data_key,
    rewrap_data_keys,
    unwrap_data_key,
    wrap_data_key,
)

PROJECT = "7f1f3a52-2f55-4c1e-9d0b-6a1d9f0c2b11"
OTHER_PROJECT = "0c6f1c1e-8d64-4b5e-a1f4-3b4c8e9d2a77"
ROW = "b9d0b6f4-2f0a-4ad6-9a58-1d6c3e2f7a90"
OTHER_ROW = "4e1f7c3a-55b2-4b8e-8c3d-0f9a2b6e1d44"
PRIVATE_KEY = b"0\x82\x04\xbd...PKCS#8 DER of a private key..."


@pytest.fixture
def root_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def data_key() -> bytes:
    return new_data_key()


# ---------------------------------------------------------------------------------------------
# data keys under the root key


def test_new_data_keys_are_32_random_bytes() -> None:
    first, second = new_data_key(), new_data_key()
    assert len(first) == len(second) == 32
    assert first != second


def test_wrapped_data_key_unwraps_to_the_same_key(root_key: bytes, data_key: bytes) -> None:
    wrapped = wrap_data_key(root_key, data_key, project_id=PROJECT)
    assert unwrap_data_key(root_key, wrapped, project_id=PROJECT) == data_key


def test_wrapped_data_key_starts_with_a_version_byte_and_a_fresh_nonce(root_key: bytes, data_key: bytes) -> None:
    first = wrap_data_key(root_key, data_key, project_id=PROJECT)
    second = wrap_data_key(root_key, data_key, project_id=PROJECT)
    assert first[0] == second[0] == 0x01
    assert len(first) == 1 + 12 + 32 + 16
    assert first[1:13] != second[1:13]
    assert data_key not in first


def test_data_key_wrapped_for_one_project_does_not_unwrap_for_another(root_key: bytes, data_key: bytes) -> None:
    wrapped = wrap_data_key(root_key, data_key, project_id=PROJECT)
    with pytest.raises(EnvelopeError, match=OTHER_PROJECT):
        unwrap_data_key(root_key, wrapped, project_id=OTHER_PROJECT)


def test_data_key_does_not_unwrap_under_a_different_root_key(root_key: bytes, data_key: bytes) -> None:
    wrapped = wrap_data_key(root_key, data_key, project_id=PROJECT)
    with pytest.raises(EnvelopeError, match="does not authenticate"):
        unwrap_data_key(os.urandom(32), wrapped, project_id=PROJECT)


def test_any_flipped_bit_of_a_wrapped_data_key_is_detected(root_key: bytes, data_key: bytes) -> None:
    wrapped = wrap_data_key(root_key, data_key, project_id=PROJECT)
    for index in range(len(wrapped)):
        tampered = bytearray(wrapped)
        tampered[index] ^= 0x01
        with pytest.raises(EnvelopeError):
            unwrap_data_key(root_key, bytes(tampered), project_id=PROJECT)


def test_unknown_format_version_is_refused_by_name(root_key: bytes, data_key: bytes) -> None:
    wrapped = wrap_data_key(root_key, data_key, project_id=PROJECT)
    with pytest.raises(EnvelopeError, match="unknown format version 2"):
        unwrap_data_key(root_key, b"\x02" + wrapped[1:], project_id=PROJECT)


def test_truncated_blob_is_refused(root_key: bytes) -> None:
    with pytest.raises(EnvelopeError, match="truncated"):
        unwrap_data_key(root_key, b"\x01" + b"\x00" * 20, project_id=PROJECT)


def test_keys_of_the_wrong_length_are_refused(root_key: bytes, data_key: bytes) -> None:
    with pytest.raises(ValueError, match="root key must be 32 bytes"):
        wrap_data_key(root_key[:16], data_key, project_id=PROJECT)
    with pytest.raises(ValueError, match="data key must be 32 bytes"):
        wrap_data_key(root_key, data_key[:31], project_id=PROJECT)
    with pytest.raises(ValueError, match="data key must be 32 bytes"):
        encrypt_private_key(data_key + b"x", PRIVATE_KEY, table="certificates", row_id=ROW)


# ---------------------------------------------------------------------------------------------
# private keys under the data key


def test_private_key_round_trips_for_its_own_row(data_key: bytes) -> None:
    blob = encrypt_private_key(data_key, PRIVATE_KEY, table="certificates", row_id=ROW)
    assert PRIVATE_KEY not in blob
    assert decrypt_private_key(data_key, blob, table="certificates", row_id=ROW) == PRIVATE_KEY


def test_private_key_ciphertext_copied_to_another_row_does_not_decrypt(data_key: bytes) -> None:
    blob = encrypt_private_key(data_key, PRIVATE_KEY, table="certificates", row_id=ROW)
    with pytest.raises(EnvelopeError, match=f"certificates {OTHER_ROW}"):
        decrypt_private_key(data_key, blob, table="certificates", row_id=OTHER_ROW)


def test_private_key_ciphertext_copied_to_another_table_does_not_decrypt(data_key: bytes) -> None:
    blob = encrypt_private_key(data_key, PRIVATE_KEY, table="certificates", row_id=ROW)
    with pytest.raises(EnvelopeError):
        decrypt_private_key(data_key, blob, table="certificate_authorities", row_id=ROW)


def test_private_key_does_not_decrypt_under_another_projects_data_key(data_key: bytes) -> None:
    blob = encrypt_private_key(data_key, PRIVATE_KEY, table="certificates", row_id=ROW)
    with pytest.raises(EnvelopeError):
        decrypt_private_key(new_data_key(), blob, table="certificates", row_id=ROW)


def test_tampered_private_key_ciphertext_is_detected(data_key: bytes) -> None:
    blob = bytearray(encrypt_private_key(data_key, PRIVATE_KEY, table="certificates", row_id=ROW))
    blob[20] ^= 0x80
    with pytest.raises(EnvelopeError, match="does not authenticate"):
        decrypt_private_key(data_key, bytes(blob), table="certificates", row_id=ROW)


def test_wrapped_data_key_is_not_accepted_as_a_private_key_ciphertext(root_key: bytes, data_key: bytes) -> None:
    # Domain separation: both layers share a format, but their associated data never coincide.
    wrapped = wrap_data_key(root_key, data_key, project_id=PROJECT)
    with pytest.raises(EnvelopeError):
        decrypt_private_key(root_key, wrapped, table="data_keys", row_id=PROJECT)


def test_table_name_with_a_colon_is_refused_as_ambiguous(data_key: bytes) -> None:
    with pytest.raises(ValueError, match="invalid binding"):
        encrypt_private_key(data_key, PRIVATE_KEY, table="certificates:x", row_id=ROW)


def test_error_messages_never_contain_key_material(root_key: bytes, data_key: bytes) -> None:
    blob = encrypt_private_key(data_key, PRIVATE_KEY, table="certificates", row_id=ROW)
    with pytest.raises(EnvelopeError) as excinfo:
        decrypt_private_key(data_key, blob, table="certificates", row_id=OTHER_ROW)
    message = str(excinfo.value)
    for secret in (data_key, root_key, PRIVATE_KEY):
        assert secret.hex() not in message and base64.b64encode(secret).decode() not in message
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__


# ---------------------------------------------------------------------------------------------
# root key rotation


def test_rewrapped_data_keys_unwrap_under_the_new_root_key_only(root_key: bytes) -> None:
    data_keys = {PROJECT: new_data_key(), OTHER_PROJECT: new_data_key()}
    wrapped = {project: wrap_data_key(root_key, key, project_id=project) for project, key in data_keys.items()}
    new_root = os.urandom(32)

    rewrapped = rewrap_data_keys(root_key, new_root, wrapped)

    assert rewrapped.keys() == wrapped.keys()
    for project, key in data_keys.items():
        assert unwrap_data_key(new_root, rewrapped[project], project_id=project) == key
        with pytest.raises(EnvelopeError):
            unwrap_data_key(root_key, rewrapped[project], project_id=project)


def test_private_keys_stay_readable_after_root_key_rotation(root_key: bytes, data_key: bytes) -> None:
    wrapped = wrap_data_key(root_key, data_key, project_id=PROJECT)
    blob = encrypt_private_key(data_key, PRIVATE_KEY, table="certificates", row_id=ROW)
    new_root = os.urandom(32)

    rewrapped = rewrap_data_keys(root_key, new_root, {PROJECT: wrapped})[PROJECT]

    recovered = unwrap_data_key(new_root, rewrapped, project_id=PROJECT)
    assert decrypt_private_key(recovered, blob, table="certificates", row_id=ROW) == PRIVATE_KEY


def test_rotation_with_a_wrong_old_root_key_fails_naming_the_project(root_key: bytes, data_key: bytes) -> None:
    wrapped = {PROJECT: wrap_data_key(root_key, data_key, project_id=PROJECT)}
    with pytest.raises(EnvelopeError, match=PROJECT):
        rewrap_data_keys(os.urandom(32), os.urandom(32), wrapped)


# ---------------------------------------------------------------------------------------------
# loading the root key


def test_root_key_loads_from_base64(root_key: bytes) -> None:
    assert load_root_key(base64.b64encode(root_key).decode(), None) == root_key


def test_root_key_loads_from_a_file_of_base64_text(root_key: bytes, tmp_path: Path) -> None:
    path = tmp_path / "root.key"
    path.write_text(base64.b64encode(root_key).decode() + "\n")
    assert load_root_key(None, path) == root_key


def test_root_key_loads_from_a_file_of_32_raw_bytes(root_key: bytes, tmp_path: Path) -> None:
    path = tmp_path / "root.key"
    path.write_bytes(root_key)
    assert load_root_key(None, path) == root_key


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_root_key_of_the_wrong_length_is_rejected(length: int, tmp_path: Path) -> None:
    encoded = base64.b64encode(os.urandom(length)).decode()
    with pytest.raises(ConfigurationError, match=f"must decode to 32 bytes, got {length}"):
        load_root_key(encoded, None)
    path = tmp_path / "root.key"
    path.write_text(encoded)
    with pytest.raises(ConfigurationError, match=f"got {length}"):
        load_root_key(None, path)


def test_root_key_that_is_not_base64_is_rejected_without_echoing_it() -> None:
    value = "not base64 at all!" * 3
    with pytest.raises(ConfigurationError, match="not valid base64") as excinfo:
        load_root_key(value, None)
    assert value not in str(excinfo.value)


def test_missing_root_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no root key"):
        load_root_key(None, None)


def test_both_root_key_sources_at_once_are_refused(root_key: bytes, tmp_path: Path) -> None:
    path = tmp_path / "root.key"
    path.write_bytes(root_key)
    with pytest.raises(ConfigurationError, match="only one"):
        load_root_key(base64.b64encode(root_key).decode(), path)


def test_unreadable_root_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot be read"):
        load_root_key(None, tmp_path / "missing.key")
