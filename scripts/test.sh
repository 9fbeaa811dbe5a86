#!/usr/bin/env bash
# Runs every test of mcpgate on a fresh machine: installs the pinned peers (npm, PyPI, apt),
# checks formatting and lints, runs the Rust unit and integration tests, then the
# interoperability tests with real MCP clients and the MCP conformance suite.
#
#   scripts/test.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { printf '\n== %s\n' "$*"; }

step "peers (pinned npm, PyPI and apt packages)"
scripts/setup-peers.sh

if ! command -v cargo-nextest >/dev/null 2>&1; then
  step "cargo-nextest"
  cargo install cargo-nextest --locked --version 0.9.143
fi

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
cargo build --workspace --all-targets --locked

step "Rust tests"
cargo nextest run --workspace --locked --no-fail-fast

step "interoperability with real clients"
tests/interop/run.sh target/debug/mcpgate

step "OAuth resource server against a real IdP (oidc-provider)"
tests/oauth/run.sh target/debug/mcpgate

step "built-in authorization server with real OAuth clients"
tests/as/run.sh target/debug/mcpgate

step "proxy mode: users sign in at a real upstream IdP (oidc-provider)"
tests/proxy/run.sh target/debug/mcpgate

step "two instances on one PostgreSQL behaving as one server"
tests/multi/run.sh target/debug/mcpgate

step "login and consent pages in headless Chromium"
tests/browser/run.sh target/debug/mcpgate

step "deployment files (Dockerfile, Cloud Run manifest, documented configurations)"
tests/deploy/check.sh target/debug/mcpgate

step "MCP conformance suite: authorization mode against the built-in server"
tests/conformance/authorization.sh target/debug/mcpgate

step "MCP conformance suite: server scenarios through the gateway"
tests/conformance/run.sh target/debug/mcpgate
