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

while pgrep -f 'scripts/kernel-build\.sh' >/dev/null; do
    echo "== waiting for a running kernel build to finish"; sleep 20
done
scripts/kernel-build.sh | tail -n 2
KCACHE="$(scripts/kdir.sh --cache)"

# The module, built against the perf kernel in a copy of the sources (the repo's
# own build products belong to the debug kernel).
MOD="$KCACHE/qbench-module"
rm -rf "$MOD"; mkdir -p "$MOD"
cp -r Kbuild driver svm pgtable include "$MOD/"
find "$MOD" \( -name '*.o' -o -name '*.ko' -o -name '*.cmd' -o -name '*.mod*' \) -delete
scripts/module-build.sh "$MOD" modules > "$MOD/build.log" 2>&1 || { cat "$MOD/build.log"; die "module build failed"; }
(
    cd vmtests
    RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --quiet --target x86_64-unknown-linux-gnu
)
PROG=vmtests/target/x86_64-unknown-linux-gnu/release/svm-vmtests
ARGS=()
for ((r = 0; r < ROUNDS; r++)); do
    ARGS+=(--prog "$PROG" --prog-args "--qbench $JOBS")
done
mkdir -p "$SVM_CACHE/vm-logs"
LOG="$SVM_CACHE/vm-logs/vm-qbench-$(date +%Y%m%d-%H%M%S).log"
scripts/vm-run.sh --no-hmm-tests --module "$MOD/svm_accel.ko" "${ARGS[@]}" --quiet --log "$LOG" "${PASS[@]}"
grep -E '^(qbench|\||speed-up)' "$LOG" | sed 's/\r$//'
echo "kernel: perf flavour ($(scripts/kdir.sh)); log: $LOG"
