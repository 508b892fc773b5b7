#!/usr/bin/env bash
# Boot the svm debug kernel in QEMU (TCG) with a busybox initramfs, run
# hmm-tests against test_hmm plus the given modules/programs (see vm/init.sh),
# and judge the serial log.
#
#   scripts/vm-run.sh [--module KO [--module-args "PARAMS"]]...
#                     [--prog STATIC_BIN [--prog-args "ARGS"]]...
#                     [--dmbench STATIC_BIN [--dmbench-args "ARGS"]] [--hmmcount KO]
#                     [--no-hmm-tests] [--bench-only [--bench-rounds N [--bench-baselines]]] [--timeout SECS] [--log FILE] [--append ARGS]
#                     [--quiet] [--mem 4G] [--smp 2]
#
# --module-args gives the preceding --module its parameters, --prog-args the
# preceding --prog its arguments (split at spaces in the VM, no quoting).
# hmm-tests runs against test_hmm, and again against a --module that
# registers /dev/hmm_dmirror0 (svm_accel with dmirror=1); --dmbench runs after
# each hmm-tests run, --hmmcount (tools/hmmcount) counts hmm_range_fault().
# --bench-only: test_hmm and dmbench without hmm-tests (scripts/vm-bench.sh);
# --bench-rounds N: N rounds alternating test_hmm and the first --module, one
# dmbench run each (give dmbench --trials 1); the table shows medians over all.
# --bench-baselines: in each round, after the module's own dmbench, dmbench again through
#   the same module under the model table's baselines (module parameters range_shift and
#   lock_scope: 'svm-gpusvm' 29/rwsem, 'svm-test_hmm' 47/mutex), restored after.
#
# Exits 0 only if the VM printed "SVM-VM-RESULT rc=0", hmm-tests failed only
# where vm/expected-failures-test_hmm.txt (test_hmm) or vm/unsupported-svm.txt
# (svm) says so, THP faults allocated huge pages, and the kernel log has no
# BUG/WARNING/lockdep/KASAN/kmemleak/hung task/panic/Call Trace report.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/kernel-common.sh"

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit "${1:-0}"; }

MODULES=() MODULE_ARGS=() PROGS=() PROG_ARGS=() HMM_TESTS=1 BENCH_ONLY=0 BENCH_ROUNDS=0 BENCH_BASELINES=0 DMBENCH="" DMBENCH_ARGS="" HMMCOUNT="" QUIET=0 LOG="" EXTRA_APPEND="" MEM=4G SMP=2
TIMEOUT="${SVM_VM_TIMEOUT:-900}"
while (($#)); do
    case "$1" in
        --module) MODULES+=("$2"); MODULE_ARGS+=(""); shift 2 ;;
        --module-args)
            ((${#MODULES[@]})) || die "--module-args needs a --module before it"
            [[ "$2" != *$'\n'* ]] || die "--module-args: no newlines"
            MODULE_ARGS[${#MODULES[@]} - 1]="$2"; shift 2 ;;
        --dmbench) DMBENCH="$2"; shift 2 ;;
        --dmbench-args) DMBENCH_ARGS="$2"; shift 2 ;;
        --hmmcount) HMMCOUNT="$2"; shift 2 ;;
        --prog) PROGS+=("$2"); PROG_ARGS+=(""); shift 2 ;;
        --prog-args)
            ((${#PROGS[@]})) || die "--prog-args needs a --prog before it"
            [[ "$2" != *$'\n'* ]] || die "--prog-args: no newlines"
            PROG_ARGS[${#PROGS[@]} - 1]="$2"; shift 2 ;;
        --no-hmm-tests) HMM_TESTS=0; shift ;;
        --bench-only) BENCH_ONLY=1; shift ;;
        --bench-rounds) BENCH_ROUNDS="$2"; shift 2 ;;
        --bench-baselines) BENCH_BASELINES=1; shift ;;
        --timeout) TIMEOUT="$2"; shift 2 ;;
        --log) LOG="$2"; shift 2 ;;
        --append) EXTRA_APPEND="$2"; shift 2 ;;
        --mem) MEM="$2"; shift 2 ;;
        --smp) SMP="$2"; shift 2 ;;
        --quiet|-q) QUIET=1; shift ;;
        -h|--help) usage ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done

KDIR="$("$SVM_ROOT/scripts/kdir.sh")"
KCACHE="$("$SVM_ROOT/scripts/kdir.sh" --cache)"
EXPECTED="$SVM_ROOT/vm/expected-failures-test_hmm.txt"
UNSUPPORTED="$SVM_ROOT/vm/unsupported-svm.txt"

# hmm-tests from the same kernel tree, built once per kernel key.
HMM_TESTS_BIN="$KCACHE/hmm-tests"
if ((HMM_TESTS)) && [[ ! -x "$HMM_TESTS_BIN" ]]; then
    echo "== building $HMM_TESTS_BIN"
    gcc -static -O2 -I"$KDIR" -I"$KDIR/tools/include/uapi" \
        "$KDIR/tools/testing/selftests/mm/hmm-tests.c" -lpthread -o "$HMM_TESTS_BIN.tmp"
    mv "$HMM_TESTS_BIN.tmp" "$HMM_TESTS_BIN"
fi

# --- initramfs --------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/svm-vm.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
LIST="$WORK/initramfs.list"   # usr/gen_init_cpio input: no root or mknod needed
{
    echo "dir /dev 0755 0 0"
    echo "nod /dev/console 0600 0 0 c 5 1"
    echo "dir /bin 0755 0 0"
    echo "file /bin/busybox /bin/busybox 0755 0 0"
    echo "file /init $SVM_ROOT/vm/init.sh 0755 0 0"
    echo "dir /svm 0755 0 0"
    echo "dir /svm/modules 0755 0 0"
    echo "dir /svm/progs 0755 0 0"
    if ((HMM_TESTS || BENCH_ONLY)); then
        echo "file /svm/test_hmm.ko $KDIR/lib/test_hmm.ko 0644 0 0"
    fi
    if ((HMM_TESTS && !BENCH_ONLY)); then
        echo "file /svm/hmm-tests $HMM_TESTS_BIN 0755 0 0"
    fi
    if [[ -n "$DMBENCH" ]]; then
        [[ -x "$DMBENCH" ]] || die "not an executable: $DMBENCH"
        echo "file /svm/dmbench $(realpath "$DMBENCH") 0755 0 0"
        printf '%s\n' "$DMBENCH_ARGS" > "$WORK/dmbench.args"
        echo "file /svm/dmbench.args $WORK/dmbench.args 0644 0 0"
    fi
    if [[ -n "$HMMCOUNT" ]]; then
        [[ -f "$HMMCOUNT" ]] || die "no such module: $HMMCOUNT"
        echo "file /svm/hmmcount.ko $(realpath "$HMMCOUNT") 0644 0 0"
    fi
} > "$LIST"

: > "$WORK/modules.list"
for i in "${!MODULES[@]}"; do
    ko=${MODULES[i]}
    [[ -f "$ko" ]] || die "no such module: $ko"
    echo "file /svm/modules/$(basename "$ko") $(realpath "$ko") 0644 0 0" >> "$LIST"
    echo "$(basename "$ko") ${MODULE_ARGS[i]}" >> "$WORK/modules.list"
done
: > "$WORK/progs.list"
i=0
for prog in "${PROGS[@]}"; do
    [[ -x "$prog" ]] || die "not an executable: $prog"
    # The initramfs has no libc: refuse dynamically linked programs early.
    if readelf -l "$prog" 2>/dev/null | grep -q 'Requesting program interpreter'; then
        die "$prog is dynamically linked; build it static"
    fi
    name="$(printf '%02d-%s' "$i" "$(basename "$prog")")"
    i=$((i + 1))
    echo "file /svm/progs/$name $(realpath "$prog") 0755 0 0" >> "$LIST"
    echo "$name ${PROG_ARGS[i - 1]}" >> "$WORK/progs.list"   # "<name> <args...>"
done
echo "file /svm/modules.list $WORK/modules.list 0644 0 0" >> "$LIST"
if ((BENCH_ROUNDS > 0)); then
    ((BENCH_ONLY && ${#MODULES[@]})) || die "--bench-rounds needs --bench-only and a --module"
    echo "$BENCH_ROUNDS" > "$WORK/bench.rounds"
    echo "file /svm/bench.rounds $WORK/bench.rounds 0644 0 0" >> "$LIST"
    if ((BENCH_BASELINES)); then
        printf 'svm-gpusvm 29 2\nsvm-test_hmm 47 1\n' > "$WORK/bench.baselines"
        echo "file /svm/bench.baselines $WORK/bench.baselines 0644 0 0" >> "$LIST"
    fi
fi
echo "file /svm/progs.list $WORK/progs.list 0644 0 0" >> "$LIST"

INITRD="$WORK/initramfs.cpio.gz"
"$KDIR/usr/gen_init_cpio" "$LIST" | gzip -1 > "$INITRD"

# --- boot -------------------------------------------------------------------
if [[ -z "$LOG" ]]; then
    mkdir -p "$SVM_CACHE/vm-logs"
    LOG="$SVM_CACHE/vm-logs/vm-$(date +%Y%m%d-%H%M%S).log"
fi
# oops=panic + panic=-1 + -no-reboot: an oops ends the run at once instead of
# leaving a half-dead VM until the timeout.  No -cpu max: ~5x slower on TCG.
# One socket per vCPU: SeaBIOS's MP table lists only the first CPU of each
# package, and without ACPI the kernel would bring up a single CPU.
# Under TCG the guest TSC is the host's, but the vCPUs' TSCs look unsynchronised and the
# PIT calibration fails at random, so the kernel would fall back to the jiffies clocksource
# (4 ms steps at HZ=250), useless for dmbench's timings: give it the host's TSC rate and
# call the TSC reliable.
TSC_KHZ=$(awk -F: '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo 2>/dev/null || true)
# numa=fake=2: two NUMA nodes, as the machines drivers ship on have; move_pages() between them
# migrates mirrored pages (vmtests dmirror_refault_under_migration).
APPEND="console=ttyS0 panic=-1 oops=panic no_hash_pointers tsc=reliable numa=fake=2"
[[ -z "$TSC_KHZ" ]] || APPEND+=" tsc_early_khz=$TSC_KHZ"
# The perf flavour is built without kmemleak (kernel/perf.fragment): tell init not to look for it,
# so its absence is a failure only on the debug kernel.
[[ $SVM_KERNEL_FLAVOUR != perf ]] || APPEND+=" svm.kmemleak=0"
APPEND+=" $EXTRA_APPEND"
QEMU=(qemu-system-x86_64 -machine "${SVM_QEMU_MACHINE:-q35}" -accel "tcg,thread=multi"
      -m "$MEM" -smp "$SMP,sockets=$SMP,cores=1,threads=1" -nographic -no-reboot
      -kernel "$KDIR/arch/x86/boot/bzImage" -initrd "$INITRD" -append "$APPEND")

echo "== booting (timeout ${TIMEOUT}s), serial log: $LOG"
t0=$(date +%s)
set +e
if ((QUIET)); then
    timeout "$TIMEOUT" "${QEMU[@]}" < /dev/null > "$LOG" 2>&1
else
    timeout "$TIMEOUT" "${QEMU[@]}" < /dev/null 2>&1 | tee "$LOG"
fi
qemu_rc=${PIPESTATUS[0]}
set -e
t1=$(date +%s)
# Serial lines end in CRLF.
sed -i 's/\r$//' "$LOG"

# --- judge ------------------------------------------------------------------
problems=()
echo
echo "================ svm VM summary ================"
echo "serial log: $LOG"
echo "VM wall time: $((t1 - t0)) s (qemu rc=$qemu_rc)"
((qemu_rc != 124)) || problems+=("timed out after ${TIMEOUT}s")

# Kernel reports: only on printk lines ("[    1.234567][  T123] ..."), so test
# output can't trip them.  Each pattern is specific enough not to match boot banners
# such as lockdep's "Lock dependency validator" or "KernelAddressSanitizer
# initialized".
KPATTERNS='BUG:|WARNING:|kernel BUG at|Oops|Kernel panic|Call Trace|KASAN:'
KPATTERNS+='|possible circular locking|inconsistent lock state|possible recursive locking'
KPATTERNS+='|suspicious RCU usage|lock held when returning|lockdep is turned off'
KPATTERNS+='|blocked for more than|hung task|soft lockup|rcu: INFO: .*detected stall'
KPATTERNS+='|ODEBUG:|UBSAN:'
# DMA-API debugging turning itself off (its own allocation failed): every later DMA check of
# the run would be blind.
KPATTERNS+='|DMA-API: cacheline tracking ENOMEM|DMA-API: debugging out of memory'
# (kmemleak's "N new suspected memory leaks" is judged from its report below.)
KPATTERNS+='|unreferenced object'
if grep -nE "\[ *[0-9]+\.[0-9]+\].*($KPATTERNS)" "$LOG" > "$WORK/kernel-reports"; then
    problems+=("kernel reports: $(wc -l < "$WORK/kernel-reports") lines (see above)")
    echo "kernel reports:"
    head -n 40 "$WORK/kernel-reports" | sed 's/^/  /'
fi
# kmemleak's report, printed by `cat` in init: one record per object, as
# "<comm> <pid> <backtrace functions...>".  Objects allocated by the insmod of
# test_hmm whose backtrace has a function listed as "kmemleak <function>" in
# the expected file are test_hmm's own known leaks; anything else fails.
section() {  # section <label>: lines between "== BEGIN <label>" and "== END <label>"
    awk -v b="== BEGIN $1" -v e="== END $1" \
        'index($0, b) == 1 { p = 1; next } p && index($0, e) == 1 { p = 0 } p' "$LOG"
}
mapfile -t leak_funcs < <(awk '$1 == "kmemleak" { print $2 }' "$EXPECTED")
test_hmm_pid=$(sed -nE 's/^SVM-VM-PID insmod-test_hmm ([0-9]+)$/\1/p' "$LOG")
section kmemleak | awk '
    /^unreferenced object/ { if (rec != "") print rec; rec = "?"; next }
    /^  comm "/ { split($0, a, "\""); match($0, /pid [0-9]+/)
                  rec = a[2] " " substr($0, RSTART + 4, RLENGTH - 4); next }
    /^    [A-Za-z_0-9.]+\+0x/ { sub(/\+.*/, "", $1); rec = rec " " $1 }
    END { if (rec != "") print rec }' > "$WORK/leaks" || true
known_leaks=0 leaks=0
while read -r comm pid funcs; do
    known=0
    if [[ $comm == insmod && $pid == "$test_hmm_pid" ]]; then
        for f in "${leak_funcs[@]}"; do
            [[ " $funcs " == *" $f "* ]] && known=1
        done
    fi
    if ((known)); then
        known_leaks=$((known_leaks + 1))
    else
        leaks=$((leaks + 1))
        echo "kmemleak: unreferenced object from $comm (pid $pid): ${funcs:0:160}"
    fi
done < "$WORK/leaks"
echo "kmemleak: $leaks unreferenced objects, $known_leaks known test_hmm leaks"
((leaks == 0)) || problems+=("kmemleak: $leaks unreferenced objects")

# Steps recorded by init.
echo "steps:"
grep -E '^SVM-VM-STEP ' "$LOG" | while read -r _ label rc; do
    printf '  %-40s %s\n' "${label#label=}" "$([[ $rc == rc=0 ]] && echo ok || echo "FAILED ($rc)")"
done || true
grep -qE '^SVM-VM-STEP .* rc=[1-9]' "$LOG" && problems+=("failed steps (see above)")

# hmm-tests: TAP lines "ok N name", "not ok N name", "ok N name # SKIP ...".
# judge_hmm <driver> <list> <kind>: a failing case listed in <list> is reported
# as <kind> (expected failure / unsupported), never as a pass; any other
# failure fails the run.
judge_hmm() {
    local driver=$1 list=$2 kind=$3 label="hmm-tests [$1]" pass skip t
    section "$label" > "$WORK/hmm-$driver.out"
    if ! grep -qF "== END $label" "$LOG"; then
        problems+=("$label did not finish")
        return
    fi
    pass=$(grep -E '^ok [0-9]+ ' "$WORK/hmm-$driver.out" | grep -vc '# SKIP' || true)
    skip=$(grep -cE '^ok [0-9]+ .*# SKIP' "$WORK/hmm-$driver.out" || true)
    mapfile -t failed < <(sed -nE 's/^not ok [0-9]+ ([^ ]+).*/\1/p' "$WORK/hmm-$driver.out")
    mapfile -t listed < <(grep -vE '^\s*(#|$)' "$list" | awk '$1 != "kmemleak" && $1 != "flaky" { print $1 }')
    mapfile -t flaky < <(awk '$1 == "flaky" { print $2 }' "$list")
    local nlisted=0
    for t in "${failed[@]}"; do
        if printf '%s\n' "${listed[@]}" | grep -qxF "$t"; then
            nlisted=$((nlisted + 1))
        fi
    done
    echo "$label: pass $pass, fail $((${#failed[@]} - nlisted)), $kind $nlisted, skip $skip"
    for t in "${failed[@]}"; do
        if printf '%s\n' "${listed[@]}" | grep -qxF "$t"; then
            echo "  $kind: $t -- $(awk -v t="$t" '$1 == t { $1 = ""; sub(/^ +/, ""); print }' "$list" | cut -c1-110)"
        elif [[ $driver == test_hmm* ]] && printf '%s\n' "${flaky[@]}" | grep -qxF "$t"; then
            # Upstream's own race, listed with its cause: reported, never a pass, never ours.
            echo "  FLAKY (upstream test_hmm, informational): $t -- $(awk -v t="$t" '$1 == "flaky" && $2 == t { $1 = $2 = ""; sub(/^ +/, ""); print }' "$list" | cut -c1-110)"
        elif grep -qF "# ${t##*.}: Test terminated by timeout" "$WORK/hmm-$driver.out"; then
            # kselftest's fixed 30 s per-test wall clock, under TCG on a loaded host
            # (migrate_multiple does 1024 migrations): upstream's driver racing a timer is
            # reported, not a failure of ours; a kernel report would still fail the run.
            if [[ $driver == test_hmm* ]]; then
                echo "  TIMEOUT (kselftest 30 s wall clock under TCG; informational): $t"
            else
                echo "  UNEXPECTED FAILURE (timeout): $t"
                problems+=("$label: timeout $t")
            fi
        else
            echo "  UNEXPECTED FAILURE: $t"
            problems+=("$label: unexpected failure $t")
        fi
    done
    for t in "${listed[@]}"; do
        if grep -qE "^ok [0-9]+ $t\$" "$WORK/hmm-$driver.out"; then
            echo "  XPASS (listed in $(basename "$list") but passed): $t"
        fi
    done
    ((pass > 0)) || problems+=("$label: nothing passed")
}

# One line per test: its result against each driver that ran.
hmm_side_by_side() {
    local f1="$WORK/hmm-test_hmm.out" f2="$WORK/hmm-svm.out"
    [[ -f $f1 && -f $f2 ]] || return 0
    echo "hmm-tests per test (test_hmm | svm):"
    res() {  # res <file> <test>
        local l
        l=$(grep -E "^(not )?ok [0-9]+ $2( |\$)" "$1" | head -n1)
        case "$l" in
            "not ok"*) if awk -v t="$2" '$1 == t { f = 1 } END { exit !f }' "$UNSUPPORTED" && [[ $1 == "$f2" ]]; then
                           echo unsupported; else echo FAIL; fi ;;
            *"# SKIP"*) echo skip ;;
            ok*) echo pass ;;
            *) echo "-" ;;
        esac
    }
    sed -nE 's/^(not )?ok [0-9]+ ([^ ]+).*/\2/p' "$f1" | while read -r t; do
        printf '  %-52s %-12s %s\n' "$t" "$(res "$f1" "$t")" "$(res "$f2" "$t")"
    done
}

# dmbench lines of both drivers, side by side with the ratio test_hmm / svm
# (for times: > 1 means svm is faster; for MiB/s the inverse is printed).
dmbench_table() {
    grep -qE '^DMBENCH driver=' "$LOG" || return 0
    echo "dmbench (medians; same VM run, same workload through the dmirror uAPI):"
    awk '
        /^DMBENCH driver=/ {
            for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
            m = f["metric"]; if (!(m in unit)) { order[++n] = m }
            unit[m] = f["unit"]; k = f["driver"] SUBSEP m
            vals[k, ++cnt[k]] = f["value"] + 0
        }
        END {
            # The median of each (driver, metric) over every run that reported it, and its
            # spread: the interquartile range over the runs (nearest rank), "-" for one run.
            for (k in cnt) {
                c = cnt[k]
                for (i = 2; i <= c; i++) {
                    x = vals[k, i]
                    for (j = i - 1; j >= 1 && vals[k, j] > x; j--) vals[k, j + 1] = vals[k, j]
                    vals[k, j + 1] = x
                }
                med = (c % 2) ? vals[k, (c + 1) / 2] : (vals[k, c / 2] + vals[k, c / 2 + 1]) / 2
                val[k] = sprintf("%.3f", med); runs[k] = c
                q1 = int((c - 1) / 4) + 1; q3 = c - int((c - 1) / 4)
                iqr[k] = (c > 1) ? sprintf("%.1f..%.1f", vals[k, q1], vals[k, q3]) : "-"
            }
            nb = 0
            for (k in cnt) { split(k, kk, SUBSEP); if (kk[1] ~ /^svm-/ && !(kk[1] in isb)) { isb[kk[1]] = 1; base[++nb] = kk[1] } }
            printf "  %-28s %14s %14s %10s  %-18s %-18s %s", "metric", "test_hmm", "svm", "ratio", "test_hmm IQR", "svm IQR", "unit"
            for (x = 1; x <= nb; x++) printf " | %14s", base[x]
            printf "\n"
            for (i = 1; i <= n; i++) {
                m = order[i]; a = val["test_hmm", m]; b = val["svm", m]; r = "-"
                if (a != "" && b != "" && a + 0 > 0 && b + 0 > 0) {
                    if (unit[m] ~ /MiB\/s/) r = sprintf("%.2fx", b / a)
                    else if (m !~ /storm_ops|hmm_calls|extra|scale/) r = sprintf("%.2fx", a / b)
                }
                ia = iqr["test_hmm", m]; ib = iqr["svm", m]
                printf "  %-28s %14s %14s %10s  %-18s %-18s %s", m, (a == "" ? "-" : a), (b == "" ? "-" : b), r, (ia == "" ? "-" : ia), (ib == "" ? "-" : ib), unit[m]
                for (x = 1; x <= nb; x++) { v = val[base[x], m]; printf " | %14s", (v == "" ? "-" : v) }
                printf "\n"
            }
            print "  ratio: how many times better svm is (test_hmm time / svm time; svm MiB/s / test_hmm MiB/s)"
            print "  mirror_cost: per round, fault-in minus the re-read of the same buffer (the fault service and the first touch of each page)"
            print "  fault_service: the fault service of each driver alone (svm_accel: fault_ns; test_hmm: a kretprobe on dmirror_fault)"
            print "  scale_2t_over_1t: per round, two threads on disjoint buffers over one thread (MiB/s / MiB/s)"
            if (nb) print "  svm-*: the same module under the baselines of the model table (range_shift/lock_scope module parameters)"
            for (k in runs) if (runs[k] > 1) { printf "  (medians and interquartile ranges over %d alternating rounds)\n", runs[k]; break }
        }' "$LOG"
    grep -qE '^SVM-VM-STEP label=dmbench-.* rc=[1-9]' "$LOG" && problems+=("dmbench failed")
    return 0
}

if ((BENCH_ONLY)); then
    dmbench_table
elif ((HMM_TESTS)); then
    judge_hmm test_hmm "$EXPECTED" "expected failure"
    if grep -qF "== BEGIN hmm-tests [svm]" "$LOG"; then
        judge_hmm svm "$UNSUPPORTED" "unsupported"
    fi
    # The THP=never runs (vm/init.sh): nothing may fail there, on either driver (the
    # flaky list still applies to test_hmm's own races).
    NEVER_LIST="$WORK/never-list"
    grep -E '^flaky ' "$EXPECTED" > "$NEVER_LIST" || true
    for d in test_hmm-thp-never svm-thp-never; do
        if grep -qF "== BEGIN hmm-tests [$d]" "$LOG"; then
            judge_hmm "$d" "$NEVER_LIST" "expected failure"
        fi
    done
    hmm_side_by_side
    dmbench_table
    thp=$(sed -nE 's/^SVM-VM-THP thp_fault_alloc=([0-9]+).*/\1/p' "$LOG")
    echo "THP: $(grep -E '^SVM-VM-THP ' "$LOG" | cut -d' ' -f2- || echo 'no report')"
    [[ -n "$thp" && "$thp" -gt 0 ]] \
        || problems+=("THP: no 2 MiB page was fault-allocated during hmm-tests")
fi

result=$(sed -nE 's/^SVM-VM-RESULT rc=([0-9]+)$/\1/p' "$LOG" | tail -n1)
if [[ -z "$result" ]]; then
    problems+=("no SVM-VM-RESULT line (VM crashed, hung or was killed)")
elif ((result != 0)); then
    problems+=("SVM-VM-RESULT rc=$result")
fi

if ((${#problems[@]})); then
    echo "RESULT: FAIL"
    printf '  - %s\n' "${problems[@]}"
    exit 1
fi
echo "RESULT: PASS"
