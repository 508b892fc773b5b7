#!/usr/bin/env bash
# Main job: the fault storm, first on the kernel model (the engine under millions of checked
# device accesses), then inside Linux (the svm_accel module in QEMU on the debug kernel, which
# scripts/vm-storm.sh builds and caches). Prints a summary table for each; fails if any check
# failed. `--model-only` skips the VM; other arguments go to the model storm
# (`scripts/storm.sh --model-only --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
vm=1
args=()
for a in "$@"; do
  if [ "$a" = --model-only ]; then vm=0; else args+=("$a"); fi
done
cargo build --release -q -p svm-tests --bin storm
target/release/storm "${args[@]}"
if [ "$vm" = 1 ]; then
  echo
  scripts/vm-storm.sh
fi
