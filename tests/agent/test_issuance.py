"""Issuance by ``kms-pki agent`` from upstream's v1 and v2 configs, with a server-made key and with a CSR
(DESIGN.md 10; issue 14, must show 1): the files appear with their configured permissions, the chain
honours ``omit-root``, ``on-issuance`` runs once."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from tests.agent.conftest import (
    Agent,
    AgentPki,
    hook_runs,
    leaf,
    mode_of,
    pair_matches,
    requests_of,
    write_config,
)
from tests.compat.wire import fingerprints


async def test_v1_server_key_files_appear_with_their_modes_a_chain_without_root_and_on_issuance_once(
        agent_pki: AgentPki, start_agent, tmp_path: Path, db: asyncpg.Connection) -> None:
    config = write_config(agent_pki, tmp_path, version="v1", modes={"private-key": "0640", "certificate": "0644",
                                                                    "chain": "0604"})
    agent: Agent = start_agent(config)
    key, cert, chain = tmp_path / "private" / "key.pem", tmp_path / "out" / "cert.pem", tmp_path / "out" / "chain.pem"
    await agent.until(lambda: cert.exists() and hook_runs(tmp_path), what="the certificate and its hook")
    checks = agent.count("status checked")
    await agent.until(lambda: agent.count("status checked") >= checks + 2, what="two more status checks")
    assert (mode_of(key), mode_of(cert), mode_of(chain)) == (0o640, 0o644, 0o604)
    assert pair_matches(key, cert)
    assert leaf(cert).subject.rfc4514_string() == "CN=web.example.test"
    assert fingerprints(chain.read_text()) == fingerprints(agent_pki.issuing_pem)  # the root left out
    assert await requests_of(db, agent_pki) == 1
    assert hook_runs(tmp_path) == [["issuance", hook_runs(tmp_path)[0][1]]]
