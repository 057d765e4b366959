"""docker-compose.yml is valid: parsed by a real Compose implementation (no Docker engine runs here)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose") is None and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "docker-compose"], capture_output=True, timeout=300)
    return ["docker-compose"] if shutil.which("docker-compose") else None


def test_compose_file_is_valid_and_declares_the_five_services_with_health_checks() -> None:
    compose = _compose()
    if compose is None:
        pytest.skip("neither `docker compose` nor `docker-compose` can be installed here")
    check = subprocess.run([*compose, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert check.returncode == 0, check.stderr
    out = subprocess.run([*compose, "-f", str(ROOT / "docker-compose.yml"), "config"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, check=True).stdout
    config = yaml.safe_load(out)
    services = config["services"]
    assert {"api", "worker", "beat", "postgres", "redis"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["redis"]["image"].startswith("redis:7")
    for name in ("postgres", "redis", "api"):
        assert "healthcheck" in services[name], name
    assert "pgdata" in config["volumes"]
    assert any(str(v).startswith("pgdata:") or (isinstance(v, dict) and v.get("source") == "pgdata")
               for v in services["postgres"]["volumes"]), json.dumps(services["postgres"]["volumes"])


def _secrets_of(service: dict[str, object]) -> set[str]:
    entries = service.get("secrets") or []
    assert isinstance(entries, list)
    return {e if isinstance(e, str) else e["source"] for e in entries}


def test_only_the_worker_and_beat_services_get_the_ca_root_key() -> None:
    """CA keys are sealed under the CA root key so that the front end cannot open them (DESIGN.md 4.4)."""
    compose = _compose()
    if compose is None:
        pytest.skip("neither `docker compose` nor `docker-compose` can be installed here")
    out = subprocess.run([*compose, "-f", str(ROOT / "docker-compose.yml"), "config"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, check=True).stdout
    config = yaml.safe_load(out)
    services = config["services"]
    ca_secret = "kms_ca_root_key"
    assert config["secrets"][ca_secret]["file"].endswith("secrets/ca-root.key")
    for name in ("worker", "beat"):
        env = services[name]["environment"]
        assert env["KMS_CA_ROOT_KEY_FILE"] == f"/run/secrets/{ca_secret}", name
        assert {ca_secret, "kms_root_key"} <= _secrets_of(services[name]), name
    for name in set(services) - {"worker", "beat"}:
        env = services[name].get("environment") or {}
        assert not {"KMS_CA_ROOT_KEY", "KMS_CA_ROOT_KEY_FILE"} & set(env), name
        assert ca_secret not in _secrets_of(services[name]), name
    assert services["api"]["environment"]["KMS_ROOT_KEY_FILE"] == "/run/secrets/kms_root_key"
