"""DESIGN.md 4.3, observed on what the service issued, leaves and CAs alike: every serial is reserved
for the issuer that really signed the certificate, no issuer signed two certificates with one serial,
each serial is positive, at most 20 octets and random-sized (not a counter), and the serial the service
stored and answered is the certificate's own.

The issuer of each certificate is found from the certificate (issuer name and authority key
identifier against the project's CA certificates), not from the row's ``ca_id``.
"""

from __future__ import annotations

from collections import Counter
from uuid import UUID

import asyncpg
from cryptography import x509

from tests.invariants.observing import Population, Signed, signed_in_project

# A positive DER INTEGER of at most 20 octets (RFC 5280 4.1.2.2) is below 2**159.
MAX_SERIAL = 2**159


def _ski(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def _aki(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None


def _issuer_id(signed: Signed, cas: list[Signed]) -> str:
    """The id the serial must be reserved under: the CA whose certificate signed this one, or the
    certificate itself when it signed itself (a root CA, a self-signed leaf)."""
    cert = signed.certificate
    aki = _aki(cert)
    if cert.issuer == cert.subject and aki in (None, _ski(cert)):
        return signed.id
    issuers = [ca for ca in cas if ca.certificate.subject == cert.issuer
               and _ski(ca.certificate) == aki]
    assert len(issuers) == 1, f"{signed.kind} {signed.id}: no single CA of the project signed it ({issuers})"
    cert.verify_directly_issued_by(issuers[0].certificate)
    return issuers[0].id


async def _signed(db: asyncpg.Connection, population: Population) -> list[Signed]:
    signed = await signed_in_project(db, population.project_id)
    assert {s.kind for s in signed} == {"certificate", "ca"}, signed
    assert len(signed) >= sum(len(a) for a in population.by_path.values())
    return signed


async def test_every_issued_serial_is_reserved_for_the_issuer_that_signed_it(
        population: Population, db: asyncpg.Connection) -> None:
    signed = await _signed(db, population)
    cas = [s for s in signed if s.kind == "ca"]
    reserved = {(str(r["issuer_id"]), int(r["serial_number"], 16)) for r in await db.fetch(
        "SELECT issuer_id, serial_number FROM issued_serials WHERE issuer_id = ANY($1::uuid[])",
        [UUID(s.id) for s in signed])}
    for s in signed:
        issuer = _issuer_id(s, cas)
        assert (issuer, s.certificate.serial_number) in reserved, f"{s.kind} {s.id}: serial not reserved"


async def test_no_issuer_signed_two_certificates_with_the_same_serial(
        population: Population, db: asyncpg.Connection) -> None:
    signed = await _signed(db, population)
    cas = [s for s in signed if s.kind == "ca"]
    per_issuer = Counter((_issuer_id(s, cas), s.certificate.serial_number) for s in signed)
    assert [key for key, n in per_issuer.items() if n > 1] == []
    # The batch alone put several certificates under one issuing CA: the check compared something.
    assert max(Counter(issuer for issuer, _ in per_issuer).values()) >= 8


async def test_every_serial_is_positive_at_most_20_octets_and_not_a_small_counter(
        population: Population, db: asyncpg.Connection) -> None:
    for s in await _signed(db, population):
        serial = s.certificate.serial_number
        assert 0 < serial < MAX_SERIAL, f"{s.kind} {s.id}: serial {serial:x}"
        # At least 64 random bits (CA/B BR 7.1): a CSPRNG value this short has odds of 2**-95.
        assert serial.bit_length() > 64, f"{s.kind} {s.id}: serial {serial:x} is too short to be random"


async def test_stored_and_answered_serial_is_the_certificates_own(
        population: Population, db: asyncpg.Connection) -> None:
    signed = {s.id: s for s in await _signed(db, population)}
    for s in signed.values():
        assert s.stored_serial == format(s.certificate.serial_number, "x"), (s.kind, s.id, s.stored_serial)
    for path, answered in population.by_path.items():
        for a in answered:
            assert int(a.serial, 16) == signed[a.id].certificate.serial_number, (path, a)
