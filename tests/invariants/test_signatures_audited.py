"""DESIGN.md 4.5, observed on what the service issued: every signature has exactly one
``certificate.sign`` audit event carrying its serial, on every path (single request with a CSR or a
server key, batch, renewal, root and intermediate CA creation, self-signed profile), and no such
event names a signature that was not stored.

The serial is read from the stored certificate itself, not from the row's serial column, and audit
events are counted in the test's own project only (the worker is shared by the whole session).
"""

from __future__ import annotations

import asyncpg
import pytest
from cryptography import x509

from tests.invariants.observing import PATHS, Population, event_serial, signed_in_project, signing_events


@pytest.mark.parametrize("path", PATHS)
async def test_each_signature_on_this_path_has_exactly_one_signing_audit_event_with_its_serial(
        path: str, population: Population, db: asyncpg.Connection) -> None:
    answered = population.by_path[path]
    assert answered, f"nothing was signed on the {path} path"
    stored = {s.id: s for s in await signed_in_project(db, population.project_id)}
    events = await signing_events(db, population.project_id)
    for thing in answered:
        assert thing.id in stored, f"the API answered {thing} but the service stored no such {thing.kind}"
        serial = stored[thing.id].certificate.serial_number
        carrying = [e for e in events if event_serial(e) == serial]
        assert len(carrying) == 1, (path, thing, carrying)
        assert (carrying[0].subject_type, carrying[0].subject_id) == (thing.kind, thing.id), carrying[0]


async def test_no_signing_audit_event_lacks_a_stored_certificate_with_its_serial(
        population: Population, db: asyncpg.Connection) -> None:
    stored = await signed_in_project(db, population.project_id)
    by_serial: dict[int, list[x509.Certificate]] = {}
    for s in stored:
        by_serial.setdefault(s.certificate.serial_number, []).append(s.certificate)
    events = await signing_events(db, population.project_id)
    assert len(events) >= sum(len(a) for a in population.by_path.values())  # the observer sees the events
    orphans = [e for e in events if event_serial(e) not in by_serial]
    assert orphans == [], "signing audit events without a stored certificate of that serial"
    # And each event points at the row that holds the certificate it audits.
    ids = {(s.kind, s.id): s.certificate.serial_number for s in stored}
    for e in events:
        assert ids.get((e.subject_type, e.subject_id)) == event_serial(e), e
