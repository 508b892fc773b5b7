#!/usr/bin/env bash
# Main job: the fault-storm demo on the kernel model. Prints a summary table; fails if any
# invariant check failed. Extra arguments go to the demo (see `scripts/storm.sh --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p svm-tests --bin storm
exec target/release/storm "$@"
