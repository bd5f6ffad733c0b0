#!/usr/bin/env bash
# The whole test suite, on a fresh machine or not: installs what the tests
# need if it is missing (redis-server, redis-tools, nutcracker, openssl,
# prometheus for promtool, and chromium for the status page, from Debian;
# redis-py, rq and pytest in .venv; ioredis, node-redis and BullMQ from
# npm), then runs the lints, the Rust tests and the client tests against
# the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v nutcracker >/dev/null 2>&1 || missing+=(nutcracker)
# The Python TLS test makes its certificates with the openssl CLI.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# promtool lints /metrics and tests the alert rules (crates/redoubt/tests/metrics.rs).
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# Headless Chromium opens the status page in each state (crates/redoubt/tests/status_page.rs).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} (Debian packages)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian's package may start a redis on 6379; tests use their own free ports.

if [ ! -x .venv/bin/python ]; then
  say "creating .venv for the Python client tests"
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r tests/clients/python/requirements.txt

# One clean run does not need incremental state, which would double the
# target dir's size.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

say "Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

say "client tests (real clients against the real binary)"
# The test profile: the dependencies the Rust tests built are reused.
cargo build --quiet --profile test -p redoubt
export TEST_REDOUBT_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/redoubt"
.venv/bin/python -m pytest -q tests/clients/python
tests/clients/node/run.sh
