"""Fuzz the API over its own /openapi.json with schemathesis, looking for any 5xx (not part of `make test`).

    python3 -m venv /tmp/sch-venv && /tmp/sch-venv/bin/pip install schemathesis   # kept out of .venv
    .venv/bin/python scripts/fuzz.py --schemathesis /tmp/sch-venv/bin/schemathesis [--max-time 120]

Starts a test stack (tests/stack.py: its own database, API and worker) with every rate limit raised
so that no answer is a 429, makes a project the operator's way (``kms-pki admin bootstrap``) with a
root and issuing CA, a policy, a profile, an application, one issued certificate and one batch, then
runs schemathesis three times with ``--checks not_a_server_error``:
1. every operation, generated ids only;
2. the ``/api/`` operations but DELETE, with the real ids bound to their path and query parameters
   (a schemathesis config file), so generated bodies reach the handlers behind the 404s;
3. the DELETE operations (all under ``/api/``) with the real ids, last, since they remove what the others read.
Exits non-zero if any run found a failure. The stack is dropped at the end (KMS_TEST_KEEP_LOGS=1 keeps
its logs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's code, as the tests import it

import aiohttp  # noqa: E402

from tests.api_client import ApiClient, login  # noqa: E402
from tests.compat.project import CERTIFICATES, DOMAIN, CompatPki, bootstrap_project, make_pki  # noqa: E402
from tests.stack import Stack  # noqa: E402

HIGH = "1000000"
RATE_LIMITS = {f"KMS_RATE_LIMIT_{name}": HIGH for name in (
    "LOGIN_PER_MINUTE", "LOGIN_BURST", "LOGIN_FAILURES_PER_MINUTE", "LOGIN_FAILURES_BURST",
    "PER_IDENTITY_PER_SECOND", "PER_IDENTITY_BURST", "PER_SOURCE_PER_SECOND", "PER_SOURCE_BURST",
    "RELYING_PARTY_PER_SECOND", "RELYING_PARTY_BURST")}


async def _real_ids(api_url: str, pki: CompatPki) -> tuple[str, dict[str, Any]]:
    """A token, and the id of every kind of resource a path or query parameter names."""
    attributes = {"commonName": f"fuzz.{DOMAIN}", "ttl": "1d", "altNames": [{"type": "dns_name",
                                                                            "value": f"fuzz.{DOMAIN}"}]}
    async with aiohttp.ClientSession() as session:
        http = ApiClient(session, api_url)
        token = await login(http, pki.project.client_id, pki.project.client_secret)
        admin = http.with_token(token)
        issued = await admin.post(CERTIFICATES, {"profileId": pki.profile_id, "attributes": attributes},
                                  params={"wait": "20"})
        assert issued.status == 200, issued.body
        batch = await admin.post("/api/v1/cert-manager/certificate-batches",
                                 {"profileId": pki.profile_id, "items": [{"attributes": attributes}]})
        assert batch.status == 202, batch.body
        ca = await admin.get(f"/api/v1/cert-manager/ca/internal/{pki.issuing_id}")
    return token, {
        "projectId": pki.project.id, "projectSlug": pki.project.slug, "caId": pki.issuing_id,
        "crlId": pki.issuing_id, "caCertId": ca.body["configuration"]["activeCaCertId"],
        "policyId": pki.policy_id, "profileId": pki.profile_id, "applicationId": pki.application_id,
        "name": pki.application_name, "certificateId": issued.body["certificate"]["certificateId"],
        "requestId": issued.body["certificateRequestId"], "batchId": batch.body["batchId"],
    }


def _config(ids: dict[str, Any], pki: CompatPki) -> str:
    lines = ["[parameters]", *(f"{key} = {json.dumps(value)}" for key, value in ids.items())]
    for path, slug in (("/api/v1/projects/slug/{slug}", pki.project.slug),
                       ("/api/v1/cert-manager/certificate-profiles/slug/{slug}", pki.profile_slug)):
        lines += ["", "[[operations]]", f"include-path = {json.dumps(path)}",
                  f"parameters = {{ slug = {json.dumps(slug)} }}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schemathesis", default="schemathesis", help="the schemathesis executable")
    parser.add_argument("--max-time", type=int, default=120, help="seconds for each of the three runs")
    parser.add_argument("--max-examples", type=int, default=50)
    args = parser.parse_args()
    os.chdir(ROOT)  # the stack's subprocesses run `python -m api.cli` from here

    stack = Stack(name="fuzz", extra_env=RATE_LIMITS)
    try:
        stack.create_database()
        api_url = stack.start_api()
        stack.start_worker(env={"KMS_PUBLIC_URL": api_url}, concurrency=1)
        pki = asyncio.run(make_pki(api_url, bootstrap_project(stack)))
        token, ids = asyncio.run(_real_ids(api_url, pki))
        config = stack.dir / "real-ids.toml"
        config.write_text(_config(ids, pki))
        common = [f"{api_url}/openapi.json", "-H", f"Authorization: Bearer {token}", "--checks",
                  "not_a_server_error", "--max-examples", str(args.max_examples), "--max-time", str(args.max_time),
                  # One worker: on Python 3.11, hypothesis' lambda descriptions race in ast.parse across threads.
                  "--workers", "1", "--no-color"]
        runs = [
            ("generated ids", [args.schemathesis, "run", *common]),
            ("real ids, no DELETE", [args.schemathesis, "--config-file", str(config), "run", *common,
                                     "--include-path-regex", "^/api/", "--exclude-method", "DELETE"]),
            ("real ids, DELETE", [args.schemathesis, "--config-file", str(config), "run", *common,
                                  "--include-method", "DELETE"]),
        ]
        failed = []
        for name, command in runs:
            print(f"== schemathesis, {name}", flush=True)
            # From the stack's folder, so schemathesis leaves its cache (.schemathesis/) out of the checkout.
            if subprocess.run(command, cwd=stack.dir, env={**os.environ, "NO_COLOR": "1"}).returncode != 0:
                failed.append(name)
        print("== failed: " + ", ".join(failed) if failed else "== no failure in any run", flush=True)
        return 1 if failed else 0
    finally:
        stack.drop()


if __name__ == "__main__":
    sys.exit(main())
