"""Where a certificate's files live, and how they change: every output path always shows one matching
key, certificate and chain, even while they are being replaced.

Two files cannot be renamed at one instant, so the outputs are not renamed at all: each configured path
(``private-key.path``, ``certificate.path``, ``chain.path``) is a symbolic link to a file in the
*current version* of a store folder beside the outputs, and a new version replaces the old by swapping
one link (the way the kubelet updates a mounted Secret)::

    /etc/ssl/private/api.key -> /etc/ssl/private/.api.key.kms-agent/current/private-key.pem
    /etc/ssl/certs/api.crt   -> /etc/ssl/private/.api.key.kms-agent/current/certificate.pem
    /etc/ssl/private/.api.key.kms-agent/
        current -> v20261201T101500Z-3fa9c1   (swapped with one rename(2))
        v20261201T101500Z-3fa9c1/  private-key.pem (0600)  certificate.pem  chain.pem  meta.json
        v20261101T093000Z-77b0e2/  (the previous version, kept; older ones are removed)
        state.json                 (the agent's bookkeeping: pending request, failures, hooks run)

A version folder is written in full, each file given its configured mode before anything points at
it, and never changed afterwards. The store sits beside the private key when the agent writes one (so
the key stays inside the folder its owner protects), else beside the certificate. A reader that opens
an output path gets the file of the version current at that moment; a reader that opens the key and
then the certificate across a swap gets one of each, as with any two files, and a service reloaded by
``on-renewal`` reads them after the swap.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from client.agent.config import CertificateConfig

CURRENT = "current"
META = "meta.json"
STATE = "state.json"
FILES = {"private-key": "private-key.pem", "certificate": "certificate.pem", "chain": "chain.pem"}
DIR_MODE = 0o755  # as upstream's MkdirAll: the files carry their own modes


class StoreError(Exception):
    """The files cannot be written (permissions, disk full, a folder in the way)."""


@dataclass(frozen=True)
class Installed:
    """The current version: its metadata and the certificate it holds."""

    version: str
    meta: dict[str, Any]
    certificate: x509.Certificate

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @property
    def not_before(self) -> datetime:
        return self.certificate.not_valid_before_utc


class Store:
    def __init__(self, config: CertificateConfig) -> None:
        self.config = config
        assert config.certificate.path is not None
        # The agent writes the key only when it holds it (never over the key of a CSR's owner).
        self.writes_key = config.mode != "csr" and config.private_key.path is not None
        anchor = config.private_key.path if self.writes_key and config.private_key.path else config.certificate.path
        anchor = Path(os.path.abspath(anchor))
        self.root = anchor.parent / f".{anchor.name}.kms-agent"
        self.state_path = self.root / STATE

    def outputs(self) -> dict[str, tuple[Path, int]]:
        """kind -> (configured path, mode) of every file this store manages."""
        found: dict[str, tuple[Path, int]] = {}
        if self.writes_key and self.config.private_key.path is not None:
            found["private-key"] = (self.config.private_key.path, self.config.private_key.mode)
        assert self.config.certificate.path is not None
        found["certificate"] = (self.config.certificate.path, self.config.certificate.mode)
        if self.config.chain.path is not None:
            found["chain"] = (self.config.chain.path, self.config.chain.mode)
        return found

    # -- reading -----------------------------------------------------------------------------------

    def installed(self) -> Installed | None:
        """The current version, if it is whole: its certificate parses, is the one its metadata names,
        and matches the private key beside it. None when there is none or it is damaged."""
        try:
            version = os.readlink(self.root / CURRENT)
            folder = self.root / version
            meta: dict[str, Any] = json.loads((folder / META).read_text())
            certificate = x509.load_pem_x509_certificate((folder / FILES["certificate"]).read_bytes())
            if any(not (folder / FILES[kind]).is_file() for kind in self.outputs()):
                return None  # the config names a file this version lacks (a chain path added since)
            if self.writes_key:
                key = serialization.load_pem_private_key((folder / FILES["private-key"]).read_bytes(), None)
                if not key_matches(key, certificate):
                    return None
        except (OSError, ValueError, TypeError):
            return None
        try:
            if int(str(meta.get("serialNumber", "")).replace(":", ""), 16) != certificate.serial_number:
                return None
        except ValueError:
            return None
        return Installed(version, meta, certificate)

    def links_in_place(self) -> bool:
        """Whether every output path is the link to the current version (a file put there by someone
        else, or a link removed, is not)."""
        for kind, (path, _) in self.outputs().items():
            try:
                if os.readlink(path) != str(self.root / CURRENT / FILES[kind]):
                    return False
            except OSError:
                return False
        return True

    # -- writing -----------------------------------------------------------------------------------

    def install(self, files: dict[str, str], meta: dict[str, Any]) -> tuple[str, list[Path]]:
        """Writes a new version holding ``files`` (kind -> PEM text, one for each output) and ``meta``,
        makes it current in one step, and returns its name and the output paths that held files of
        their own until now (written by someone else, e.g. the upstream agent), now links."""
        try:
            return self._install(files, meta)
        except OSError as exc:
            raise StoreError(f"cannot write the certificate files under {self.root}: {exc.strerror or exc}") from None

    def _install(self, files: dict[str, str], meta: dict[str, Any]) -> tuple[str, list[Path]]:
        outputs = self.outputs()
        assert set(files) == set(outputs), (sorted(files), sorted(outputs))
        for path, _ in outputs.values():
            Path(os.path.abspath(path)).parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        self.root.mkdir(exist_ok=True, mode=DIR_MODE)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        version = f"v{stamp}-{secrets.token_hex(3)}"
        staging = self.root / f".staging-{version}"
        staging.mkdir(mode=DIR_MODE)
        os.chmod(staging, DIR_MODE)  # whatever the umask
        for kind, text in files.items():
            _write_new(staging / FILES[kind], text, outputs[kind][1])
        _write_new(staging / META, json.dumps(meta, indent=2) + "\n", 0o644)
        _fsync_dir(staging)
        os.rename(staging, self.root / version)
        self._point_current_at(version)
        replaced = self.link_outputs()
        self._prune(keep={version})
        return version, replaced

    def _point_current_at(self, version: str) -> None:
        link = self.root / f".current-{secrets.token_hex(4)}"
        os.symlink(version, link)
        os.replace(link, self.root / CURRENT)  # the moment every output changes
        _fsync_dir(self.root)

    def link_outputs(self) -> list[Path]:
        """Makes each output path the link to the current version (once; afterwards only ``current``
        changes). Returns the paths that held something else, which a first run replaces."""
        replaced = []
        for kind, (path, _) in self.outputs().items():
            target = str(self.root / CURRENT / FILES[kind])
            try:
                if os.readlink(path) == target:
                    continue
            except FileNotFoundError:
                pass
            except OSError:  # a regular file, e.g. written by the upstream agent
                replaced.append(path)
            link = path.parent / f".{path.name}.kms-agent-link-{secrets.token_hex(4)}"
            os.symlink(target, link)
            os.replace(link, path)
            _fsync_dir(path.parent)
        return replaced

    def apply_modes(self) -> None:
        """Gives the current files the modes the config names now (a changed permission needs no new
        certificate)."""
        with contextlib.suppress(OSError):
            folder = self.root / os.readlink(self.root / CURRENT)
            for kind, (_, mode) in self.outputs().items():
                if (os.stat(folder / FILES[kind]).st_mode & 0o777) != mode:
                    os.chmod(folder / FILES[kind], mode)

    def _prune(self, keep: set[str]) -> None:
        """Removes versions but the current and the one before it (a reader may still have that one's
        files open; an open file outlives its removal anyway), and any staging left by a crash."""
        versions = sorted((p.name for p in self.root.iterdir() if p.is_dir() and p.name.startswith("v")),
                          reverse=True)
        keep = keep | set([n for n in versions if n not in keep][:1])
        for entry in self.root.iterdir():
            if (entry.name.startswith("v") and entry.is_dir() and entry.name not in keep) or \
                    entry.name.startswith(".staging-"):
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.name.startswith(".current-"):
                with contextlib.suppress(OSError):
                    entry.unlink()

    # -- the agent's bookkeeping -------------------------------------------------------------------

    def read_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def write_state(self, state: dict[str, Any]) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            tmp = self.root / f".state-{secrets.token_hex(4)}"
            _write_new(tmp, json.dumps(state, indent=2, sort_keys=True) + "\n", 0o600)
            os.replace(tmp, self.state_path)
        except OSError as exc:
            raise StoreError(f"cannot write {self.state_path}: {exc.strerror or exc}") from None


def key_matches(key: PrivateKeyTypes, certificate: x509.Certificate) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(key.public_key().public_bytes(serialization.Encoding.DER, spki)
                == certificate.public_key().public_bytes(serialization.Encoding.DER, spki))


def _write_new(path: Path, text: str, mode: int) -> None:
    # Created 0600 whatever the umask, given its final mode before anyone can reach it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(text.encode())
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
