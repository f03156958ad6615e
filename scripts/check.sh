#!/usr/bin/env bash
# The one command that checks everything: format, lint, types, tests.
# The README's test command and .ci/run both call it, so CI runs exactly what developers run.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== ruff format --check"
ruff format --check afperturb tests benchmarks examples
echo "== ruff check"
ruff check afperturb tests benchmarks examples
echo "== mypy --strict"
mypy
echo "== pytest"
# pytest exits 5 when it collects no test; with set -e that fails the run, as it should.
python -m pytest "$@"
