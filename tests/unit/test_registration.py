"""The registration authority's pure decisions (``shared.registration``); its HTTP behaviour is tested
through the issue, renew and batch endpoints (tests/issuance, tests/batches)."""

from __future__ import annotations

from uuid import uuid4

from shared.pki.csr import MAX_CSR_BYTES
from shared.registration import evaluate_slice, renewal_attributes


def test_renewal_turns_an_absolute_validity_window_into_its_length() -> None:
    stored = {"commonName": "a.example.test", "notBefore": "2030-01-01T00:00:00Z", "notAfter": "2030-01-02T00:00:00Z"}
    assert renewal_attributes(stored) == {"commonName": "a.example.test", "ttl": "86400s"}


def test_renewal_keeps_attributes_without_a_window_as_they_are() -> None:
    stored = {"commonName": "a.example.test", "ttl": "1h"}
    assert renewal_attributes(stored) is stored
    assert renewal_attributes(None) is None


def test_a_malformed_batch_item_fails_alone_with_its_reasons_and_its_index() -> None:
    profile_id = uuid4()
    items = evaluate_slice(profile_id, [{"csr": "x" * (MAX_CSR_BYTES + 1)}, {"attributes": 5}], 7, {})
    assert [(i.index, i.profile_id, i.csr_pem, i.attributes) for i in items] == [
        (7, profile_id, None, None), (8, profile_id, None, None)]
    assert items[0].error_message is not None and "it was not stored" in items[0].error_message
    assert items[1].error_message is not None and items[1].error_message.startswith("invalid item: attributes")
