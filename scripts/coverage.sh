#!/usr/bin/env bash
# Line and branch coverage of pipeline/ by the test suite, every process included: `python -m pipeline`
# subprocesses, Snakemake's and DVC's jobs, torchrun's workers, DataLoader workers, processes ended by
# SIGTERM, in the scratch copies of the project the tests run in (configured in pyproject.toml,
# [tool.coverage.*]). Run from a clean clone after `bash scripts/setup.sh`:
#
#   bash scripts/coverage.sh                  # the whole suite (pytest arguments may follow)
#   bash scripts/coverage.sh --rehearsal      # the suite, then the paper rehearsal (python -m scripts.rehearsal)
#
# Prints the report (statements, branches, missing lines) and writes reports/coverage/:
# coverage.json (per file: executed and missing lines and branches), report.txt (the printed report)
# and summary.md (totals, and the files under 90 % of lines). Exits with pytest's status, or the
# rehearsal's when that fails.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if ! "$PY" -c 'import coverage, sys; sys.exit(tuple(map(int, coverage.__version__.split(".")[:2])) < (7, 10))' 2>/dev/null; then
  echo "coverage: needs .venv with coverage >= 7.10: run bash scripts/setup.sh first" >&2
  exit 2
fi
rehearsal=0
if [ "${1:-}" = "--rehearsal" ]; then rehearsal=1; shift; fi
OUT=reports/coverage
rm -rf "$OUT/data" && mkdir -p "$OUT/data"   # the data files (reports/coverage/data/, see pyproject.toml)

"$PY" -m coverage run -m pytest -q "$@"
rc=$?
if [ "$rehearsal" = 1 ]; then
  "$PY" -m coverage run -m scripts.rehearsal
  r=$?
  [ "$rc" = 0 ] && rc=$r
fi

"$PY" -m coverage combine -q || exit 1
"$PY" -m coverage report | tee "$OUT/report.txt"
"$PY" -m coverage json -q -o "$OUT/coverage.json"
"$PY" -m scripts.coverage_summary "$OUT/coverage.json" --rehearsal "$rehearsal" > "$OUT/summary.md"
echo
cat "$OUT/summary.md"
exit "$rc"
