#!/usr/bin/env bash
# Installs the system packages logsender's build needs (grpcio-sys builds the gRPC C
# core with cmake and g++, against the system's OpenSSL). Idempotent and quiet when
# everything is already there. Sourced by scripts/demo.sh and scripts/test.sh.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)

if [ "${#need[@]}" -gt 0 ]; then
    echo "logsender: installing ${need[*]} (needed to build the gRPC C core)" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >/dev/null
    $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "logsender: cargo not found; install the Rust toolchain (https://rustup.rs) first" >&2
    exit 1
fi
