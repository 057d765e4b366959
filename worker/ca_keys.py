"""Loading a CA's signing key: the only code that decrypts CA private keys (never imported by the API).

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
from shared.keyring import KeyRing
from shared.keys import PrivateKey, load_private_key_der

CA_TABLE = "certificate_authorities"


@dataclass(frozen=True)
class SigningCa:
    authority: Authority
    certificate: x509.Certificate
    key: PrivateKey
    chain: list[x509.Certificate]  # the CA's own certificate first, then up to the root


class CaKeyCache:
    def __init__(self, ttl_seconds: float) -> None:
        self._ttl = ttl_seconds
        # ca id -> (expiry, sealed key it came from, key, parsed certificate chain)
        self._entries: dict[UUID, tuple[float, bytes, PrivateKey, list[x509.Certificate]]] = {}

    async def load(self, conn: Executor, keyring: KeyRing, ca_id: UUID) -> SigningCa | None:
        """The CA with its decrypted key, or None if it does not exist or has no key yet."""
        found = await db.signing_material(conn, ca_id)
        if found is None:
            return None
        return await self.signing_ca(conn, keyring, *found)

    async def signing_ca(self, conn: Executor, keyring: KeyRing, authority: Authority, blob: bytes) -> SigningCa:
        """Decrypt (or take from the cache) the key of a CA row the caller has just read."""
        cached = self._entries.get(authority.id)
        if cached is not None and cached[0] > time.monotonic() and cached[1] == blob:
            _, _, key, chain = cached
        else:
            der = await keyring.open(conn, authority.project_id, blob, table=CA_TABLE, row_id=authority.id)
            key = load_private_key_der(der)
            assert authority.certificate_pem is not None
            chain = [x509.load_pem_x509_certificate(authority.certificate_pem.encode())]
            if authority.chain_pem:
                chain += x509.load_pem_x509_certificates(authority.chain_pem.encode())
            self._entries[authority.id] = (time.monotonic() + self._ttl, blob, key, chain)
        return SigningCa(authority, chain[0], key, chain)
