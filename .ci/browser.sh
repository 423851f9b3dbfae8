#!/usr/bin/env bash
# The dashboard in a real browser (issue 11 §3): Debian's Chromium driven by Playwright for
# Python, against a real `defsync serve` and the GitHub stand-in (tests/all/dashboard.rs,
# `browser_end_to_end`, which runs tests/browser/dashboard.py).
#
#   bash .ci/browser.sh        installs what is missing, then runs the browser test
#   DEFSYNC_SCREENSHOTS=$PWD/docs/screenshots bash .ci/browser.sh
#                              also rewrites the README's screenshots
#
# Chromium comes from the distribution (apt-get install chromium); Playwright from PyPI into a
# virtualenv under the target directory. Playwright's own browser download is never used: the
# test launches /usr/bin/chromium through executable_path.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# Pinned: the script uses the sync API, get_by_label/get_by_role and expect().
PLAYWRIGHT_VERSION=1.65.2

if ! [ -x /usr/bin/chromium ]; then
  echo "== browser: installing chromium from the distribution"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi

venv="$CARGO_TARGET_DIR/browser-venv"
# A venv records its own path: one moved with its checkout no longer runs, and is made again.
if ! "$venv/bin/python" -c "import playwright, sys; sys.exit(playwright.__version__ != '$PLAYWRIGHT_VERSION')" 2>/dev/null; then
  echo "== browser: installing playwright==$PLAYWRIGHT_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "playwright==$PLAYWRIGHT_VERSION"
fi

echo "== browser: the dashboard in headless Chromium"
DEFSYNC_REQUIRE_BROWSER=1 DEFSYNC_BROWSER_PYTHON="$venv/bin/python" \
  cargo test --locked --test all dashboard::browser_end_to_end -- --nocapture
