#!/usr/bin/env bash
# `make dev`: install if needed, start the local services if down, then `kms-pki dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/kms-pki" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
fi
scripts/services.sh >/dev/null
exec "$VENV/bin/kms-pki" dev "$@"
