"""Sealing and loading a CA's signing key: the only code that decrypts CA private keys (never imported by
the API).

CA keys are sealed under the project's CA data key, which the CA root key wraps (``KMS_CA_ROOT_KEY``,
given to workers only, DESIGN.md 4.4): the API's root key opens none of them.

Keys are decrypted once and cached per worker process for ``ca_key_cache_seconds``, so signing does not
pay an AES-GCM open and a key parse per certificate; the CA's status is still read on every use, so a
disabled CA stops signing at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from uuid import UUID

from cryptography import x509

from shared.db import Executor
from shared.db import authorities as db
from shared.db.authorities import Authority
from shared.pki.keys import PrivateKey, load_private_key_der
from shared.secrets.envelope import EnvelopeError
from shared.secrets.keyring import CA_ROOT, KeyRing

CA_TABLE = "certificate_authorities"


@dataclass(frozen=True)
class SigningCa:
    authority: Authority
    certificate: x509.Certificate
    key: PrivateKey
    chain: list[x509.Certificate]  # the CA's own certificate first, then up to the root


class CaKeyCache:
    def __init__(self, keyring: KeyRing, ttl_seconds: float) -> None:
        if keyring.purpose is not CA_ROOT:
            # Under the root key, CA keys would be back within the API's reach.
            raise ValueError(f"CA keys are sealed under the CA root key, not the {keyring.purpose.what}")
        self._keyring = keyring
        self._ttl = ttl_seconds
        # ca id -> (expiry, sealed key it came from, key, parsed certificate chain)
        self._entries: dict[UUID, tuple[float, bytes, PrivateKey, list[x509.Certificate]]] = {}

    async def seal(self, conn: Executor, project_id: UUID, ca_id: UUID, der: bytes) -> tuple[bytes, str]:
        """A new CA key sealed for its row, and the ``key_sealed_by`` value to store with it."""
        sealed = await self._keyring.seal(conn, project_id, der, table=CA_TABLE, row_id=ca_id)
        return sealed, self._keyring.purpose.name

    async def load(self, conn: Executor, ca_id: UUID) -> SigningCa | None:
        """The CA with its decrypted key, or None if it does not exist or has no key yet."""
        found = await db.signing_material(conn, ca_id)
        if found is None:
            return None
        return await self.signing_ca(conn, *found)

    async def signing_ca(self, conn: Executor, authority: Authority, blob: bytes) -> SigningCa:
        """Decrypt (or take from the cache) the key of a CA row the caller has just read."""
        cached = self._entries.get(authority.id)
        if cached is not None and cached[0] > time.monotonic() and cached[1] == blob:
            _, _, key, chain = cached
        else:
            if authority.key_sealed_by != self._keyring.purpose.name:
                # Sealed before migration 0007 under the data key the API can open: a worker re-seals such
                # keys when it starts (worker.key_migration); until then this CA does not sign.
                raise EnvelopeError(f"the key of CA {authority.id} is sealed under the {authority.key_sealed_by} "
                                    "key, not yet re-sealed under the CA root key; restart a worker to re-seal it")
            der = await self._keyring.open(conn, authority.project_id, blob, table=CA_TABLE, row_id=authority.id)
            key = load_private_key_der(der)
            assert authority.certificate_pem is not None
            chain = [x509.load_pem_x509_certificate(authority.certificate_pem.encode())]
            if authority.chain_pem:
                chain += x509.load_pem_x509_certificates(authority.chain_pem.encode())
            self._entries[authority.id] = (time.monotonic() + self._ttl, blob, key, chain)
        return SigningCa(authority, chain[0], key, chain)
