#!/usr/bin/env bash
# Runs the demo: an embedded sink server on loopback, a few thousand realistic
# payloads through a worker pool, one sink restart midway, and a report; then a child
# process spooling to disk with the collector down, killed with SIGKILL, and a second
# one that replays the spool: every payload the first reported durable must arrive.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
# One cargo profile (release) for demo, tests, clippy and benches: the gRPC C core
# is built once.
exec cargo run --release --quiet --example demo -- "$@"
