#!/usr/bin/env bash
# The torture loop: the chaos test, the fault matrix, the stall and report races (tests/chaos.rs,
# tests/fault_matrix.rs, tests/fault_races.rs, tests/grpcio_traps.rs, tests/stall.rs,
# tests/reports.rs, tests/entries.rs, tests/connection.rs, the disk spool's tests/spool.rs
# and tests/spool_crash.rs: a child SIGKILLed 20+ times in its append, release and replay
# phases, a large spool's replay memory, damaged spool files; tests/refused.rs, a collector
# that refuses every call; and the OTLP wire's tests/otlp_wire.rs),
# again and again, while busy loops keep
# every core fully loaded. Prints a pass/fail line per round and the counts at the end;
# exits non-zero if any round failed.
#
#   scripts/torture.sh [ROUNDS]     (default 20; CI runs 1)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
rounds="${1:-20}"
tests=(--test chaos --test fault_matrix --test fault_races --test grpcio_traps --test stall --test entries --test connection --test reports --test spool --test spool_crash --test refused --test otlp_wire)

cargo test --release --all-features "${tests[@]}" --no-run >/dev/null 2>&1 ||
    cargo test --release --all-features "${tests[@]}" --no-run

burners=()
stop_burners() {
    for pid in "${burners[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap stop_burners EXIT
for _ in $(seq "$(nproc)"); do
    (while :; do :; done) &
    burners+=("$!")
done

log_dir="$(mktemp -d)"
passed=0
failed=0
for round in $(seq "$rounds"); do
    log="$log_dir/round-$round.log"
    start=$(date +%s)
    if cargo test --release --all-features "${tests[@]}" >"$log" 2>&1; then
        passed=$((passed + 1))
        echo "round $round: pass ($(($(date +%s) - start)) s)"
    else
        failed=$((failed + 1))
        echo "round $round: FAIL ($(($(date +%s) - start)) s); log: $log"
        grep -E "^test .* FAILED|panicked at" "$log" | head -20 || true
    fi
done
echo "torture rounds: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
