#!/usr/bin/env bash
# The in-VM test of the svm_accel driver: builds the debug kernel (cached;
# scripts/kernel-build.sh), the module (Kbuild at the repo root: driver/ plus
# the shared svm/ and pgtable/ sources), the static vmtests binary, then boots
# the VM with both (scripts/vm-run.sh --module --prog) and fails on any failed
# test or any kernel splat (BUG/WARNING/lockdep/KASAN/kmemleak/hung task...).
#
#   scripts/vm-test.sh [vm-run.sh options, e.g. --no-hmm-tests --quiet --smp 4]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/kernel-common.sh"
cd "$SVM_ROOT"

t0=$(date +%s)

# --- kernel: never start a second build while one runs (it would wait on the
# cache lock anyway, but a build for other inputs would compete for the CPUs).
while pgrep -f 'scripts/kernel-build\.sh' >/dev/null; do
    echo "== waiting for a running kernel build to finish"
    sleep 20
done
if ! KDIR="$(scripts/kdir.sh 2>/dev/null)"; then
    echo "== building the kernel (scripts/kernel-build.sh)"
    scripts/kernel-build.sh | tail -n 3
    KDIR="$(scripts/kdir.sh)"
fi
echo "== kernel: $KDIR"

# --- module ------------------------------------------------------------------
echo "== building svm_accel.ko"
MLOG="$(mktemp)"
if ! scripts/module-build.sh . modules > "$MLOG" 2>&1; then
    cat "$MLOG"; rm -f "$MLOG"; die "module build failed"
fi
grep -vE '^make|^  (CC|LD|RUSTC|MODPOST)|\.ko$' "$MLOG" || true   # warnings
rm -f "$MLOG"

# --- vmtests (static glibc: the initramfs has no libc) --------------------------
echo "== building vmtests (static)"
(
    cd vmtests
    RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --quiet --target x86_64-unknown-linux-gnu
)
PROG=vmtests/target/x86_64-unknown-linux-gnu/release/svm-vmtests

# --- run -----------------------------------------------------------------------
mkdir -p "$SVM_CACHE/vm-logs"
LOG="$SVM_CACHE/vm-logs/vm-test-$(date +%Y%m%d-%H%M%S).log"
set +e
scripts/vm-run.sh --module svm_accel.ko --prog "$PROG" --log "$LOG" "$@"
rc=$?
set -e

echo
echo "================ svm_accel vmtests ================"
sed -n '/^== BEGIN prog:[0-9]*-svm-vmtests/,/^== END prog:/p' "$LOG" \
    | grep -E '^(FAIL|stats:|time:|[0-9]+ passed)' || echo "(no vmtests output: see $LOG)"
echo "total wall time (build + VM): $(( $(date +%s) - t0 )) s"
exit $rc
