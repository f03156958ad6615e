#!/usr/bin/env bash
# Install headless Chromium for tests/test_browser.py when it is missing.
#
# The browser test loads the static HTML report in a real browser to prove the transcript
# viewer renders and that untrusted model output executes nothing. Debian ships Chromium as the
# `chromium` package (binary /usr/bin/chromium); this script installs it non-interactively.
# It never fails the CI run: when Chromium cannot be installed (no root, no apt, no network),
# it says why and exits 0, and the browser test skips with that reason.
set -uo pipefail

find_chromium() {
    for name in chromium chromium-browser google-chrome; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

if path="$(find_chromium)"; then
    echo "install_chromium: found $path"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium: apt-get not available; browser test will be skipped" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install_chromium: not root and no passwordless sudo; browser test will be skipped" >&2
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update -qq; then
    echo "install_chromium: apt-get update failed; browser test will be skipped" >&2
    exit 0
fi
if ! $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
    echo "install_chromium: apt-get install chromium failed; browser test will be skipped" >&2
    exit 0
fi
if path="$(find_chromium)"; then
    echo "install_chromium: installed $path ($("$path" --version 2>/dev/null || echo 'version unknown'))"
else
    echo "install_chromium: chromium installed but not on PATH; browser test will be skipped" >&2
fi
exit 0
