#!/usr/bin/env bash
# The inspect_ai interop suite (tests/test_inspect.py): installs the `inspect` extra into the
# active environment and runs the file that the main suite skips without inspect_ai.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e ".[inspect]"
# inspect_ai leaves anyio memory streams to the garbage collector; pytest reports those as
# unraisable exceptions at the end of the session (outside any test, so the module's warning
# filters cannot reach them) and fails the run. They are inspect_ai's, not afperturb's.
python -m pytest tests/test_inspect.py -p no:unraisableexception "$@"
