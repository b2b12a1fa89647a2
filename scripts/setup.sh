#!/usr/bin/env bash
# Creates .venv and installs requirements.txt (and this package, editable) into it.
# Idempotent and quick when nothing changed: a stamp keyed by the requirements' checksum.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
have=$(cat .venv/.requirements.sha256 2>/dev/null || true)
if [ "$want" != "$have" ]; then
  echo "setup: installing requirements into .venv (a few minutes the first time)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  .venv/bin/python -m pip install --quiet --no-deps -e .
  echo "$want" > .venv/.requirements.sha256
fi
