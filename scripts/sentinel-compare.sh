#!/usr/bin/env bash
# Failover time seen by clients: ioredis's own Sentinel mode vs ioredis
# through Redoubt, one Sentinel set-up, the primary killed with SIGKILL.
# Prints the README's table (tests/clients/node/sentinel-compare.js).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p redoubt
(cd tests/clients/node && [ -d node_modules ] || npm ci --silent)
TEST_REDOUBT_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/redoubt" \
  node tests/clients/node/sentinel-compare.js 2>/dev/null
