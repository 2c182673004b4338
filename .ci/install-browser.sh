#!/usr/bin/env bash
# Install what the browser tests (pytest -m browser) need: Debian's chromium and the playwright Python package.
# Idempotent: each part is skipped when already present. Playwright's own browser download is never used;
# the tests launch /usr/bin/chromium directly.
set -euo pipefail

if [ ! -x /usr/bin/chromium ]; then
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y --no-install-recommends chromium
fi

if ! python3 -c "import playwright" 2>/dev/null; then
    python3 -m pip install "playwright>=1.40"
fi

/usr/bin/chromium --version
python3 -c "import playwright; print('playwright', __import__('importlib.metadata').metadata.version('playwright'))"
