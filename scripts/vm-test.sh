#!/usr/bin/env bash
# The in-VM test of the svm_accel driver: builds the debug kernel (cached;
# scripts/kernel-build.sh), the module (Kbuild at the repo root: driver/ plus
# the shared svm/ and pgtable/ sources), the static vmtests binary, then boots
# the VM with both (scripts/vm-run.sh --module --prog) and fails on any failed
# test or any kernel splat (BUG/WARNING/lockdep/KASAN/kmemleak/hung task...).
# The module is loaded with dmirror=1, so the upstream hmm-tests and dmbench run
# against test_hmm and then against the engine, side by side (issue 4).
#
#   scripts/vm-test.sh [vm-run.sh options, e.g. --no-hmm-tests --quiet --smp 4]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/kernel-common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib/vm-build.sh"
cd "$SVM_ROOT"

t0=$(date +%s)

vm_build   # kernel (cached), module, vmtests: sets VMTESTS
PROG="$VMTESTS"

# --- run -----------------------------------------------------------------------
mkdir -p "$SVM_CACHE/vm-logs"
LOG="$SVM_CACHE/vm-logs/vm-test-$(date +%Y%m%d-%H%M%S).log"
set +e
# dmirror=1: svm_accel also registers /dev/hmm_dmirror0/1, so hmm-tests and
# dmbench run a second time, against the engine (vm/init.sh).
scripts/vm-run.sh --module svm_accel.ko --module-args dmirror=1 \
    --dmbench "$DMBENCH" --dmbench-args "${SVM_DMBENCH_ARGS:---mib 16 --trials 3}" \
    --hmmcount "$HMMCOUNT" --prog "$PROG" --log "$LOG" "$@"
rc=$?
set -e

echo
echo "================ svm_accel vmtests ================"
sed -n '/^== BEGIN prog:[0-9]*-svm-vmtests/,/^== END prog:/p' "$LOG" \
    | grep -E '^(FAIL|stats:|storm|time:|[0-9]+ passed)' || echo "(no vmtests output: see $LOG)"
echo "total wall time (build + VM): $(( $(date +%s) - t0 )) s"
exit $rc
