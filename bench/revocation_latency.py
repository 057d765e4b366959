"""Revoke-to-visible latency: how long after ``POST /certificates/{id}/revoke`` a relying party sees it.

    .venv/bin/python -m bench.revocation_latency --revocations 100

Against a stack of its own (API and worker, as users start them): issues N certificates, then revokes
them one at a time; from the moment each revoke is sent, every probe polls its source until the serial
shows as revoked there, and the next revocation waits for all of them. Prints p50/p99 (and max) per
probe, as a table and as JSON.

A probe is one async function ``(Probing, Revoked) -> bool``: True once the revocation is visible. Two
probes: the public DER CRL (the URL in every certificate's CRL distribution point) and the OCSP responder
(the URL in its AIA), asked by POST as `openssl ocsp` asks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from bench.common import tenant_with_pki
from tests.api_client import ApiClient
from tests.issuance.issuing import CERTIFICATES, issued, server_key_attributes
from tests.pki_setup import Pki
from tests.stack import Stack

POLL_SECONDS = 0.01
GIVE_UP_SECONDS = 30.0


@dataclass(frozen=True)
class Probing:
    client: ApiClient  # carries the admin's token; probes of public files drop it
    pki: Pki


@dataclass(frozen=True)
class Revoked:
    certificate_id: str
    serial_number: str  # hex, as the API shows it
    certificate: x509.Certificate


Probe = Callable[[Probing, Revoked], Awaitable[bool]]


async def crl_shows(probing: Probing, revoked: Revoked) -> bool:
    """The issuing CA's public DER CRL lists the serial."""
    url = f"{probing.client.base}/api/v1/cert-manager/crl/{probing.pki.issuing_id}/der"
    async with probing.client.session.get(url) as resp:
        if resp.status != 200:
            return False
        crl = x509.load_der_x509_crl(await resp.read())
    return crl.get_revoked_certificate_by_serial_number(int(revoked.serial_number, 16)) is not None


async def ocsp_says_revoked(probing: Probing, revoked: Revoked) -> bool:
    """The issuing CA's OCSP responder answers ``revoked`` for the certificate."""
    issuer = x509.load_pem_x509_certificate(probing.pki.issuing_pem.encode())
    der = ocsp.OCSPRequestBuilder().add_certificate(
        revoked.certificate, issuer, hashes.SHA1(),  # the CertID hash OpenSSL sends by default
    ).build().public_bytes(serialization.Encoding.DER)
    url = f"{probing.client.base}/api/v1/cert-manager/ocsp/{probing.pki.issuing_id}"
    async with probing.client.session.post(url, data=der, headers={"Content-Type": "application/ocsp-request"}) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise AssertionError(f"OCSP answered {resp.status}: {body[:300]!r}")
        answer = ocsp.load_der_ocsp_response(body)
    return (answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
            and answer.certificate_status == ocsp.OCSPCertStatus.REVOKED)


PROBES: dict[str, Probe] = {"crl": crl_shows, "ocsp": ocsp_says_revoked}


async def until_visible(probe: Probe, probing: Probing, revoked: Revoked, sent_at: float) -> float:
    """Seconds from ``sent_at`` until ``probe`` sees the revocation."""
    while not await probe(probing, revoked):
        if time.monotonic() - sent_at > GIVE_UP_SECONDS:
            raise AssertionError(f"{revoked.serial_number} not visible after {GIVE_UP_SECONDS} s")
        await asyncio.sleep(POLL_SECONDS)
    return time.monotonic() - sent_at


def percentiles(seconds: list[float]) -> dict[str, float]:
    q = statistics.quantiles(seconds, n=100, method="inclusive")
    return {"p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1), "max_ms": round(max(seconds) * 1000, 1)}


async def run(stack: Stack, n: int) -> dict[str, object]:
    token, pki = await tenant_with_pki(stack)
    latencies: dict[str, list[float]] = {name: [] for name in PROBES}
    async with aiohttp.ClientSession() as session:
        client = ApiClient(session, stack.api_url).with_token(token)
        probing = Probing(client, pki)
        views = [await issued(client, pki.profile_id, attributes=server_key_attributes(f"host{i}.example.test"))
                 for i in range(n)]
        for view in views:
            revoked = Revoked(str(view["certificateId"]), str(view["serialNumber"]),
                              x509.load_pem_x509_certificate(str(view["certificate"]).encode()))
            sent_at = time.monotonic()
            r = await client.post(f"{CERTIFICATES}/{revoked.certificate_id}/revoke",
                                  {"revocationReason": "KEY_COMPROMISE"})
            assert r.status == 200, r.body
            seen = await asyncio.gather(*(until_visible(p, probing, revoked, sent_at) for p in PROBES.values()))
            for name, seconds in zip(PROBES, seen, strict=True):
                latencies[name].append(seconds)
    return {"revocations": n, "probes": {name: percentiles(s) for name, s in latencies.items()}}


def print_table(result: dict[str, object]) -> None:
    print(f"{'probe':<10}{'revocations':>13}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    probes = result["probes"]
    assert isinstance(probes, dict)
    for name, figures in probes.items():
        print(f"{name:<10}{result['revocations']:>13}{figures['p50_ms']:>10}{figures['p99_ms']:>10}"
              f"{figures['max_ms']:>10}")
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--revocations", type=int, default=100)
    parser.add_argument("--worker-concurrency", type=int, default=2)
    args = parser.parse_args()
    stack = Stack(name="bench", extra_env={"KMS_LOG_LEVEL": "WARNING"})
    stack.create_database()
    try:
        stack.start_api()
        stack.start_worker(concurrency=args.worker_concurrency)
        print_table(asyncio.run(run(stack, args.revocations)))
    finally:
        stack.drop()


if __name__ == "__main__":
    main()
