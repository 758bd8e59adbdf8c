#!/usr/bin/env bash
# The whole test suite (unit, property, virtual-time and, as root, network-namespace tests).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --all-targets
