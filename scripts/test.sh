#!/usr/bin/env bash
# The test command (`make test`): a virtual environment with the project and its test extra,
# the services the tests talk to, lint, type check, then the whole pytest suite.
# pytest's "no tests collected" (exit 5) fails this script like any other failure.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -U pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'

# OS tools the tests use: openssl (chains, TLS handshakes), pg_dump, docker-compose (validates the
# compose file without a Docker engine), bind9's named (the DNS server ACME dns-01 tests validate against,
# and the RFC 2136 target of the external-CA tests), pebble (Let's Encrypt's test ACME server, the
# external-CA tests' upstream) and Debian's chromium (the browser tests/web/ drives through Playwright,
# which never downloads a browser of its own). Installed only if missing.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v named >/dev/null || [ -x /usr/sbin/named ] || missing+=(bind9)
command -v openssl >/dev/null || missing+=(openssl)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v pebble >/dev/null || missing+=(pebble)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; } || true
fi

scripts/services.sh

echo "== ruff"
"$VENV/bin/ruff" check .
echo "== mypy --strict shared/ api/ worker/ client/"
"$VENV/bin/mypy"
echo "== pytest"
# Two test processes (PYTEST_PROCESSES=1 for one), each with a stack of its own; a file's tests stay on one
# process (--dist loadfile), so module fixtures are made once. Most of the slowest tests wait for a
# worker outage, a CRL's validity or a restarted peer, so two processes share the two cores well.
PROCS=${PYTEST_PROCESSES:-2}
if [ "$PROCS" -gt 1 ]; then
  exec "$VENV/bin/pytest" -n "$PROCS" --dist loadfile "$@"
fi
exec "$VENV/bin/pytest" "$@"
