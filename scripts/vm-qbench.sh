#!/usr/bin/env bash
# The user-mode queue benchmark (issue 12): small jobs (one ADD each) through a
# queue against the same jobs through SUBMIT, and several queues faulting at
# once (svm-vmtests --qbench), on the NON-debug "perf" kernel that
# scripts/vm-bench.sh uses (built once, cached by its inputs). Prints the
# tables; bench/RESULTS.md keeps a run. The VM suite runs a short version
# (queue_bench_short) on the debug kernel.
#
#   scripts/vm-qbench.sh [--jobs N] [--rounds R] [vm-run.sh options, e.g. --smp 4]
#
# Each round (a run of the program in the VM) takes medians of 7 trials.
set -euo pipefail
export SVM_KERNEL_FLAVOUR=perf
source "$(dirname "${BASH_SOURCE[0]}")/lib/kernel-common.sh"
cd "$SVM_ROOT"

JOBS=20000 ROUNDS=1 PASS=()
while (($#)); do
    case "$1" in
        --jobs) JOBS="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        *) PASS+=("$1"); shift ;;
    esac
done

source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-build.sh"
bench_build qbench-module
PROG=vmtests/target/x86_64-unknown-linux-gnu/release/svm-vmtests
ARGS=()
for ((r = 0; r < ROUNDS; r++)); do
    ARGS+=(--prog "$PROG" --prog-args "--qbench $JOBS")
done
mkdir -p "$SVM_CACHE/vm-logs"
LOG="$SVM_CACHE/vm-logs/vm-qbench-$(date +%Y%m%d-%H%M%S).log"
scripts/vm-run.sh --no-hmm-tests --module "$MOD/svm_accel.ko" "${ARGS[@]}" --quiet --log "$LOG" "${PASS[@]}"
grep -E '^(qbench|\||speed-up)' "$LOG" | sed 's/\r$//'
echo "kernel: perf flavour ($KDIR); log: $LOG"
