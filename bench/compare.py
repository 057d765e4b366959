"""Side-by-side: cfssl's /api/v1/cfssl/sign (a peer CA in Go) against our single-request path and our
batch path, with the same pre-made EC P-256 CSRs at the same client concurrency, on this machine.

    .venv/bin/python -m bench.compare --clients 16 --duration 15 --batch-items 10000

It installs cfssl if missing (Debian package golang-cfssl), starts `cfssl serve` on loopback with an EC
P-256 CA, and a private stack of ours (own database and Redis database, the API and a worker). Prints
certificates/s for each path and the ratios ours / cfssl, as a table and as JSON. Note what is compared:
cfssl signs and stores nothing; ours validates against a policy, stores the certificate, the request
state and an audit event durably in PostgreSQL before it answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.common import Summary, drive, make_csrs, print_table, submit_batch, summarize, tenant_with_pki
from tests.stack import Stack, free_port


def ensure_cfssl() -> str:
    found = shutil.which("cfssl")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-q", "golang-cfssl"], check=False, capture_output=True)
    if not shutil.which("cfssl"):
        subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "golang-cfssl"], check=True, capture_output=True)
    return shutil.which("cfssl") or "cfssl"


def start_cfssl(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """cfssl serve with a fresh EC P-256 root (made with cryptography) on a free loopback port."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cfssl bench CA")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    (folder / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "ca-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    (folder / "config.json").write_text(json.dumps({"signing": {"default": {
        "usages": ["digital signature", "key encipherment", "server auth"], "expiry": "720h"}}}))
    port = free_port()
    log = open(folder / "cfssl.log", "wb")
    proc = subprocess.Popen([ensure_cfssl(), "serve", "-address", "127.0.0.1", "-port", str(port),
                             "-ca", str(folder / "ca.pem"), "-ca-key", str(folder / "ca-key.pem"),
                             "-config", str(folder / "config.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/api/v1/cfssl/scaninfo", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    return proc, url


async def bench_cfssl(url: str, csrs: list[str], clients: int, duration: float) -> Summary:
    bodies = [json.dumps({"certificate_request": c}) for c in csrs]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients * 2)) as session:
        async def one(i: int) -> bool:
            async with session.post(url + "/api/v1/cfssl/sign", data=bodies[i % len(bodies)]) as r:
                body = await r.json(content_type=None)
                return r.status == 200 and bool(body.get("success"))

        await drive(2, clients, one)
        latencies, errors, seconds = await drive(duration, clients, one)
    return summarize(f"cfssl /sign, {clients} clients", latencies, errors, seconds)


async def bench_single(stack: Stack, token: str, profile_id: str, csrs: list[str], clients: int,
                       duration: float) -> Summary:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    bodies = [json.dumps({"profileId": profile_id, "csr": c}) for c in csrs]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients * 2)) as session:
        async def one(i: int) -> bool:
            async with session.post(stack.api_url + "/api/v1/cert-manager/certificates?wait=10",
                                    data=bodies[i % len(bodies)], headers=headers) as r:
                await r.read()
                return r.status == 200

        await drive(2, clients, one)
        latencies, errors, seconds = await drive(duration, clients, one)
    return summarize(f"ours single, {clients} clients", latencies, errors, seconds)


async def bench_batch(stack: Stack, token: str, profile_id: str, csrs: list[str]) -> Summary:
    """One batch of len(csrs) items: from the POST to the moment the batch reports completed."""
    async with aiohttp.ClientSession() as session:
        start = time.monotonic()
        view, _ = await submit_batch(session, stack.api_url, token, profile_id, csrs)
        seconds = time.monotonic() - start
    return Summary(f"ours batch of {len(csrs)}", view["issued"], view["failed"], round(seconds, 2),
                   round(view["issued"] / seconds, 1), None, None)


async def run(args: argparse.Namespace, stack: Stack, cfssl_url: str) -> None:
    token, pki = await tenant_with_pki(stack)
    csrs = make_csrs(max(args.batch_items, 20000))
    rows = [await bench_cfssl(cfssl_url, csrs, args.clients, args.duration),
            await bench_single(stack, token, pki.profile_id, csrs, args.clients, args.duration),
            await bench_batch(stack, token, pki.profile_id, csrs[:args.batch_items])]
    cfssl = rows[0].per_second or 1
    ratios = {"singleOverCfssl": round(rows[1].per_second / cfssl, 3),
              "batchOverCfssl": round(rows[2].per_second / cfssl, 3)}
    print_table(rows, {"ratios": ratios, "clients": args.clients, "duration": args.duration})
    print(f"ratios: single/cfssl = {ratios['singleOverCfssl']}, batch/cfssl = {ratios['batchOverCfssl']}")


def start_apis(stack: Stack, procs: int) -> None:
    """One API process, or ``procs`` of them on one port (the kernel spreads the connections)."""
    if procs <= 1:
        stack.start_api()
        return
    port = free_port()
    for n in range(procs):
        url = stack.start_api(port=port, name="api" if n == 0 else f"api{n}", env={"KMS_API_REUSE_PORT": "true"})
    stack.api_url = url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--batch-items", type=int, default=10000)
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--api-procs", type=int, default=1, help="API processes sharing one port (SO_REUSEPORT)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes, each with its own pool")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="kms-cfssl-"))
    cfssl, cfssl_url = start_cfssl(folder)
    stack = Stack(name="compare", extra_env={"KMS_LOG_LEVEL": "WARNING"})
    stack.create_database()
    try:
        start_apis(stack, args.api_procs)
        for n in range(args.workers):
            stack.start_worker(name=f"worker{n}" if n else "worker", concurrency=args.worker_concurrency)
        asyncio.run(run(args, stack, cfssl_url))
    finally:
        cfssl.terminate()
        stack.drop()


if __name__ == "__main__":
    main()
