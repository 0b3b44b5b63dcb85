#!/usr/bin/env bash
# Runs the whole test suite (unit, integration, doc tests) against real grpcio
# servers on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
exec cargo test --release --all-features "$@"
