#!/usr/bin/env bash
# The inspect_ai interop suite (tests/test_inspect.py): installs the `inspect` extra into the
# active environment and runs the file that the main suite skips without inspect_ai.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e ".[inspect]"
python -m pytest tests/test_inspect.py "$@"
