#!/usr/bin/env bash
# Soak run of the in-VM fuzzer (vmtests/src/bin/fuzz.rs; not CI, which runs a short one in
# scripts/vm-test.sh): builds the kernel (cached), the module and vmtests like vm-test.sh,
# boots the VM with svm_accel dmirror=1 (both front ends) and only the fuzzer, prints its
# per-call errno table and summary, and fails if the fuzzer reported an invariant break or
# a hang, or the VM judge found a kernel report (KASAN/BUG/WARNING/lockdep/panic/kmemleak).
#
#   scripts/vm-fuzz.sh [SEED [CALLS]] [--seed S] [--calls N] [--seconds S] [--threads T]
#                      [--arena-mib M] [--child-calls K] [--hang-secs H] [--skip A,B]
#                      [--only A,B] [--trace] [--keep-going] [--no-ksm]
#                      [vm-run.sh options, e.g. --smp 4 --timeout 5000]
#
# Defaults: a time-based seed (printed), 100000 calls, at most 3600 s, 3 threads, ksmd on.
# Reproduce a run with its seed; `--threads 1 --trace` makes the call sequence a function of
# the seed and prints each call before it is made (the last line before an oops names it).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/kernel-common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib/vm-build.sh"
cd "$SVM_ROOT"

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit "${1:-0}"; }

SEED="" CALLS=100000 SECONDS_MAX=3600 KSM=1 FUZZ_ARGS=() VM_ARGS=() TIMEOUT=""
pos=0
while (($#)); do
    case "$1" in
        --seed) SEED="$2"; shift 2 ;;
        --calls) CALLS="$2"; shift 2 ;;
        --seconds) SECONDS_MAX="$2"; shift 2 ;;
        --threads|--arena-mib|--child-calls|--hang-secs|--skip|--only)
            (($# >= 2)) || die "$1 needs a value"
            FUZZ_ARGS+=("$1" "$2"); shift 2 ;;
        --trace|--keep-going) FUZZ_ARGS+=("$1"); shift ;;
        --no-ksm) KSM=0; shift ;;
        --ksm) KSM=1; shift ;;
        --timeout) TIMEOUT="$2"; shift 2 ;;
        -h|--help) usage 0 ;;
        --smp|--mem|--append)   # vm-run.sh options with a value
            (($# >= 2)) || die "$1 needs a value"
            VM_ARGS+=("$1" "$2"); shift 2 ;;
        -*) VM_ARGS+=("$1"); shift ;;   # other vm-run.sh options (--quiet, ...)
        *)
            case $pos in
                0) SEED="$1" ;;
                1) CALLS="$1" ;;
                *) die "unexpected argument: $1" ;;
            esac
            pos=$((pos + 1)); shift ;;
    esac
done
[[ -n "$SEED" ]] || SEED=$(printf '0x%x' "$(( $(date +%s%N) & 0x7fffffffffffffff ))")
REPRO_ARGS=("${FUZZ_ARGS[@]}")
((KSM)) || REPRO_ARGS+=(--no-ksm)
((KSM)) && FUZZ_ARGS+=(--ksm)
# The VM's own time limit: the fuzzer's bound plus boot, its final checks and kmemleak.
[[ -n "$TIMEOUT" ]] || TIMEOUT=$((SECONDS_MAX + 600))

t0=$(date +%s)
vm_build   # kernel (cached), module, vmtests
FUZZ=vmtests/target/x86_64-unknown-linux-gnu/release/fuzz
[[ -x "$FUZZ" ]] || die "no $FUZZ"

mkdir -p "$SVM_CACHE/vm-logs"
LOG="$SVM_CACHE/vm-logs/vm-fuzz-$(date +%Y%m%d-%H%M%S).log"
ARGS="--seed $SEED --calls $CALLS --seconds $SECONDS_MAX --require-dmirror ${FUZZ_ARGS[*]}"
echo "== fuzz: $ARGS"
set +e
scripts/vm-run.sh --no-hmm-tests --module svm_accel.ko --module-args dmirror=1 \
    --prog "$FUZZ" --prog-args "$ARGS" --timeout "$TIMEOUT" --log "$LOG" "${VM_ARGS[@]}"
rc=$?
set -e

echo
echo "================ svm_accel fuzzer (VM) ================"
OUT="$(sed -n '/^== BEGIN prog:[0-9]*-fuzz/,/^== END prog:/p' "$LOG" | grep -v '^\[ *[0-9]' | sed '1d;$d')"
if [[ -z "$OUT" ]]; then
    echo "(no fuzzer output: see $LOG)"
    rc=1
else
    printf '%s\n' "$OUT" | grep -vE '^(SVM-VM-ARGS|fuzz: progress)' || true
    if ! grep -qE '^fuzz: calls=.* result=PASS' <<< "$OUT"; then
        echo "fuzz: no 'result=PASS' summary line (crash, hang or invariant break)"
        rc=1
    fi
fi
echo "reproduce: scripts/vm-fuzz.sh $SEED $CALLS --seconds $SECONDS_MAX ${REPRO_ARGS[*]}  (add --threads 1 --trace to pin the sequence)"
echo "serial log: $LOG"
echo "total wall time (build + VM): $(( $(date +%s) - t0 )) s"
if ((rc == 0)); then echo "vm-fuzz: PASS"; else echo "vm-fuzz: FAIL"; fi
exit $rc
