#!/usr/bin/env bash
# The kernel side of the benchmarks (issue 5): our engine vs test_hmm on a
# NON-debug kernel ("perf" flavour: kernel/config.fragment without its
# debugging section, plus kernel/perf.fragment), same VM run, same workload
# through test_hmm's dmirror uAPI (vmtests' dmbench), hmm_range_fault() calls
# counted by tools/hmmcount.  Prints vm-run.sh's side-by-side table.  Not in
# CI: it builds a second kernel (~10 min on 2 cores, cached by inputs).
#
#   scripts/vm-bench.sh [--mib M] [--trials N] [--baselines] [vm-run.sh options, e.g. --smp 4]
#
# --baselines: each round also runs dmbench through the module under the model table's
# baselines (svm-gpusvm: range_shift 29, rwsem; svm-test_hmm: range_shift 47, mutex).
set -euo pipefail
export SVM_KERNEL_FLAVOUR=perf
source "$(dirname "${BASH_SOURCE[0]}")/lib/kernel-common.sh"
cd "$SVM_ROOT"

MIB=128 TRIALS=7 PASS=() BASE=()
while (($#)); do
    case "$1" in
        --mib) MIB="$2"; shift 2 ;;
        --trials) TRIALS="$2"; shift 2 ;;
        --baselines) BASE=(--bench-baselines); shift ;;
        *) PASS+=("$1"); shift ;;
    esac
done

source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-build.sh"
bench_build modules hmmcount
mkdir -p "$SVM_CACHE/vm-logs"
LOG="$SVM_CACHE/vm-logs/vm-bench-$(date +%Y%m%d-%H%M%S).log"
scripts/vm-run.sh --bench-only --module "$MOD/svm_accel.ko" --module-args dmirror=1 \
    --dmbench vmtests/target/x86_64-unknown-linux-gnu/release/dmbench \
    --bench-rounds "$TRIALS" "${BASE[@]}" --dmbench-args "--mib $MIB --trials 1" --hmmcount "$MOD/tools/hmmcount/hmmcount.ko" \
    --quiet --log "$LOG" "${PASS[@]}"
echo "kernel: $(cat "$KCACHE/build-time.txt" 2>/dev/null | head -n1) [perf flavour: $KDIR]"
