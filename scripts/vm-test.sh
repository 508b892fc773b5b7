#!/usr/bin/env bash
# The in-VM test of the svm_accel driver: builds the debug kernel (cached;
# scripts/kernel-build.sh), the module (Kbuild at the repo root: driver/ plus
# the shared svm/ and pgtable/ sources), the static vmtests binary, then boots
# the VM with both (scripts/vm-run.sh --module --prog) and fails on any failed
# test or any kernel splat (BUG/WARNING/lockdep/KASAN/kmemleak/hung task...).
# The module is loaded with dmirror=1, so the upstream hmm-tests and dmbench run
# against test_hmm and then against the engine, side by side (issue 4), and the fuzzer
# (a short, fixed-seed run; SVM_FUZZ_ARGS overrides its arguments) covers both front ends.
#
#   scripts/vm-test.sh [vm-run.sh options, e.g. --no-hmm-tests --quiet --smp 4]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/kernel-common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib/vm-build.sh"
cd "$SVM_ROOT"

t0=$(date +%s)

vm_build   # kernel (cached), module, vmtests: sets VMTESTS
PROG="$VMTESTS"
# The fuzzer (vmtests/src/bin/fuzz.rs), a short run after the tests: a fixed seed, so CI
# replays the same per-thread call sequences; scripts/vm-fuzz.sh is the soak.
FUZZ=vmtests/target/x86_64-unknown-linux-gnu/release/fuzz
FUZZ_ARGS="${SVM_FUZZ_ARGS:---seed 0x5eed --calls 6000 --seconds 60 --require-dmirror}"

# --- run -----------------------------------------------------------------------
mkdir -p "$SVM_CACHE/vm-logs"
LOG="$SVM_CACHE/vm-logs/vm-test-$(date +%Y%m%d-%H%M%S).log"
set +e
# dmirror=1: svm_accel also registers /dev/hmm_dmirror0/1, so hmm-tests and
# dmbench run a second time, against the engine (vm/init.sh).
# The whole boot (both hmm-tests runs, dmbench, ~50 vmtests, the fuzzer) takes 8-12 min under
# TCG on 2 cores; a hang is still caught, by the guest's hung-task detector or this bound.
scripts/vm-run.sh --timeout "${SVM_VM_TIMEOUT:-1800}" --module svm_accel.ko --module-args dmirror=1 \
    --dmbench "$DMBENCH" --dmbench-args "${SVM_DMBENCH_ARGS:---mib 16 --trials 3}" \
    --hmmcount "$HMMCOUNT" --prog "$PROG" --prog "$FUZZ" --prog-args "$FUZZ_ARGS" \
    --log "$LOG" "$@"
rc=$?

# Second, short boot of the same kernel as a voluntary-preemption one (preempt=voluntary,
# CONFIG_PREEMPT_DYNAMIC: what most distributions run), where only cond_resched() lets a
# long ioctl share its CPU: the long SUBMIT/PREFETCH and the killed-job tests, with the
# soft-lockup detector at 2 s (long_job lowers watchdog_thresh). No hmm-tests, no kmemleak
# scans (the first boot did them). SVM_VOLUNTARY_PASS=0 skips it.
LOG2="${LOG%.log}-voluntary.log"
rc2=0
if [[ "${SVM_VOLUNTARY_PASS:-1}" != 0 ]]; then
    echo
    echo "================ preempt=voluntary pass ================"
    out2=$(scripts/vm-run.sh --no-hmm-tests --quiet --module svm_accel.ko --module-args dmirror=1 \
        --prog "$PROG" --prog-args "--only long_job,kill_stuck_fault,kill_during_jobs" \
        --append "preempt=voluntary svm.kmemleak=0" --log "$LOG2" 2>&1)
    rc2=$?
    grep -E '^(VM wall time|kernel reports|  [0-9]+:|RESULT|  - )' <<< "$out2" || true
fi
set -e

echo
echo "================ svm_accel vmtests ================"
sed -n '/^== BEGIN prog:[0-9]*-svm-vmtests/,/^== END prog:/p' "$LOG" \
    | grep -E '^(FAIL|stats:|storm|time:|[0-9]+ passed)' || echo "(no vmtests output: see $LOG)"
echo "================ svm_accel fuzzer (short run; soak: scripts/vm-fuzz.sh) ================"
sed -n '/^== BEGIN prog:[0-9]*-fuzz/,/^== END prog:/p' "$LOG" \
    | grep -E '^(fuzz: (calls=|FAIL|INVARIANT|HANG|setup)|    (call|seed))' || echo "(no fuzzer output: see $LOG)"
if [[ "${SVM_VOLUNTARY_PASS:-1}" != 0 ]]; then
    echo "preempt=voluntary pass: $( ((rc2 == 0)) && echo ok || echo "FAILED (see $LOG2)")"
    sed -n '/^== BEGIN prog:[0-9]*-svm-vmtests/,/^== END prog:/p' "$LOG2" | grep -E '^(FAIL|    \(SUBMIT)' || true
fi
echo "total wall time (build + VM): $(( $(date +%s) - t0 )) s"
((rc == 0)) && exit $rc2
exit $rc
