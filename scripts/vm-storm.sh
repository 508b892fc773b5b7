#!/usr/bin/env bash
# Main job in the VM: the svm_accel fault storm (`svm-vmtests --storm`, see
# vmtests/src/storm.rs). Builds the kernel (cached), the module and vmtests
# like scripts/vm-test.sh, boots the VM with just the storm (no hmm-tests),
# prints the storm's summary table from the serial log, and fails if the storm
# failed or the kernel log has a report (BUG/WARNING/lockdep/KASAN/kmemleak...).
#
#   scripts/vm-storm.sh [--threads N] [--seconds S] [--mib M] [--seed X]
#                       [--churn munmap,mprotect,fork|none]
#                       [vm-run.sh options, e.g. --smp 4 --quiet --timeout 600]
#
# Storm defaults: 4 job threads, 10 s, 64 MiB, a time-based seed (printed; pass
# it back with --seed to replay the same choices).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/kernel-common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib/vm-build.sh"
cd "$SVM_ROOT"

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit "${1:-0}"; }

STORM_ARGS=(--storm) VM_ARGS=()
while (($#)); do
    case "$1" in
        --threads|--seconds|--mib|--seed|--churn)
            (($# >= 2)) || die "$1 needs a value"
            STORM_ARGS+=("$1" "$2"); shift 2 ;;
        -h|--help) usage 0 ;;
        *) VM_ARGS+=("$1"); shift ;;   # vm-run.sh options, passed through in order
    esac
done

t0=$(date +%s)
vm_build   # sets VMTESTS

mkdir -p "$SVM_CACHE/vm-logs"
LOG="$SVM_CACHE/vm-logs/vm-storm-$(date +%Y%m%d-%H%M%S).log"
set +e
scripts/vm-run.sh --no-hmm-tests --module svm_accel.ko \
    --prog "$VMTESTS" --prog-args "${STORM_ARGS[*]}" --log "$LOG" "${VM_ARGS[@]}"
rc=$?
set -e

echo
echo "================ svm_accel fault storm (VM) ================"
OUT="$(sed -n '/^== BEGIN prog:[0-9]*-svm-vmtests/,/^== END prog:/p' "$LOG" | sed '1d;$d')"
if [[ -z "$OUT" ]]; then
    echo "(no storm output: see $LOG)"
    rc=1
else
    printf '%s\n' "$OUT" | grep -vE '^(SVM-VM-ARGS|ok |time:|[0-9]+ passed)'
    if ! grep -q '^storm: clean' <<< "$OUT"; then
        echo "storm: no 'storm: clean' line"
        rc=1
    fi
fi
echo "serial log: $LOG"
echo "total wall time (build + VM): $(( $(date +%s) - t0 )) s"
if ((rc == 0)); then echo "vm-storm: PASS"; else echo "vm-storm: FAIL"; fi
exit $rc
