#!/usr/bin/env bash
# Installs what tests/browser needs, idempotently: Debian's Chromium (/usr/bin/chromium) and the
# pinned playwright-core of tools/peers/browser (npm ci from its lockfile). Never downloads a
# browser of Playwright's own (`npx playwright install` cannot work on these machines).
#
#   tests/browser/setup.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PEER="$ROOT/tools/peers/browser"
PLAYWRIGHT_VERSION="$(node -p "require('$PEER/package.json').dependencies['playwright-core']")"

if ! [[ -x /usr/bin/chromium ]]; then
  echo "browser setup: installing Debian's chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version >/dev/null 2>&1 || { echo "browser setup: /usr/bin/chromium does not run" >&2; exit 1; }

installed="$(node -p "try { require('$PEER/node_modules/playwright-core/package.json').version } catch { '' }")"
if [[ "$installed" != "$PLAYWRIGHT_VERSION" ]]; then
  echo "browser setup: npm ci in tools/peers/browser (playwright-core $PLAYWRIGHT_VERSION)" >&2
  # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: playwright-core downloads nothing, but be explicit.
  (cd "$PEER" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
