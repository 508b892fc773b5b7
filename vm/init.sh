#!/bin/busybox sh
# shellcheck shell=dash
# PID 1 of the svm test VM (copied to /init by scripts/vm-run.sh).
# Runs: hmm-tests (+ dmbench) against test_hmm, then loads the --module
# payload and, if it registered /dev/hmm_dmirror0, runs them again against it;
# then the --prog payload, then a kmemleak scan.  Every step prints "SVM-VM-STEP label=<l> rc=<n>"; the last
# line is "SVM-VM-RESULT rc=<number of failed steps>".  hmm-tests results and
# kmemleak reports are judged on the host against
# vm/expected-failures-test_hmm.txt, so they are not steps.
# No `set -e`: a failing step must never keep us from the result line.

/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /tmp
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/svm/progs
cd /tmp || true

fails=0
# step <label> <rc>: record a step result; non-zero counts as a failure.
step() {
    echo "SVM-VM-STEP label=$1 rc=$2"
    [ "$2" -eq 0 ] || fails=$((fails + 1))
}
vmstat() { awk -v k="$1" '$1 == k { print $2 }' /proc/vmstat; }

echo "SVM-VM-BOOTED $(uname -r) cmdline: $(cat /proc/cmdline)"

# hmm-tests' huge page cases: 4 hugetlb pages, THP on every anonymous fault.
echo 4 > /proc/sys/vm/nr_hugepages
[ "$(cat /proc/sys/vm/nr_hugepages)" = 4 ]
step sysctl-nr_hugepages $?
# THP mode: "always" unless the kernel command line says svm.thp=madvise|never
# (vm-run.sh --append svm.thp=madvise).
thp=always
for arg in $(cat /proc/cmdline); do
    case "$arg" in svm.thp=*) thp=${arg#svm.thp=} ;; esac
done
echo "$thp" > /sys/kernel/mm/transparent_hugepage/enabled
grep -q "\[$thp\]" /sys/kernel/mm/transparent_hugepage/enabled
step "thp-$thp" $?

# tools/hmmcount: a kprobe counting hmm_range_fault() calls, read by dmbench.
if [ -f /svm/hmmcount.ko ]; then
    insmod /svm/hmmcount.ko
    step insmod-hmmcount $?
fi

# hmm-tests (and dmbench, if present) against whichever driver owns
# /dev/hmm_dmirror0 now; output labelled with the driver: run_hmm_tests <driver>
run_hmm_tests() {
    if [ -x /svm/hmm-tests ]; then
        echo "== BEGIN hmm-tests [$1] uptime=$(cut -d' ' -f1 /proc/uptime)"
        /svm/hmm-tests
        echo "== END hmm-tests [$1] rc=$? uptime=$(cut -d' ' -f1 /proc/uptime)"
    fi
    if [ -x /svm/dmbench ]; then
        echo "== BEGIN dmbench [$1] uptime=$(cut -d' ' -f1 /proc/uptime)"
        # shellcheck disable=SC2046  # split on purpose
        /svm/dmbench --driver "$1" $(cat /svm/dmbench.args 2>/dev/null)
        rc=$?
        echo "== END dmbench [$1] rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
        step "dmbench-$1" $rc
    fi
}

# hmm-tests again with THP=never (after the run above, under the boot's mode): the
# exclusive cases fail on test_hmm when THP backs their buffer (6.12's
# make_device_exclusive_range() refuses pages of a large folio), and must pass on both
# drivers without it.  Only when the boot's mode is "always".
run_hmm_tests_thp_never() {
    [ -x /svm/hmm-tests ] && [ "$thp" = always ] || return 0
    echo never > /sys/kernel/mm/transparent_hugepage/enabled
    echo "== BEGIN hmm-tests [$1-thp-never] uptime=$(cut -d' ' -f1 /proc/uptime)"
    /svm/hmm-tests
    echo "== END hmm-tests [$1-thp-never] rc=$? uptime=$(cut -d' ' -f1 /proc/uptime)"
    echo "$thp" > /sys/kernel/mm/transparent_hugepage/enabled
}

thp_before=$(vmstat thp_fault_alloc)
if [ -f /svm/bench.rounds ]; then
    # Benchmark mode (scripts/vm-bench.sh): the drivers alternate, one dmbench trial each
    # per round, so drift over the run hits all alike; which driver goes first alternates
    # too, and so does the order of the module's configurations (its own, then the model
    # table's baselines if /svm/bench.baselines lists them), so no one of them always runs
    # right after another.  The payload module is the first line of modules.list
    # (svm_accel dmirror=1); vm-run.sh takes the medians.
    read -r pko pargs < /svm/modules.list
    echo "svm 21 0" > /tmp/confs
    [ -f /svm/bench.baselines ] && cat /svm/bench.baselines >> /tmp/confs
    nconf=$(wc -l < /tmp/confs)
    bench_test_hmm() {
        insmod /svm/test_hmm.ko
        step "insmod-test_hmm-$r" $?
        run_hmm_tests test_hmm
        rmmod test_hmm
        step "rmmod-test_hmm-$r" $?
    }
    bench_svm() {
        # shellcheck disable=SC2086  # split on purpose
        insmod "/svm/modules/$pko" $pargs
        step "insmod-${pko%.ko}-$r" $?
        k=$((r % nconf))
        { tail -n +$((k + 1)) /tmp/confs; head -n "$k" /tmp/confs; } > /tmp/confs.r
        while read -r name shift scope; do
            echo "$shift" > /sys/module/svm_accel/parameters/range_shift
            echo "$scope" > /sys/module/svm_accel/parameters/lock_scope
            run_hmm_tests "$name"
        done < /tmp/confs.r
        echo 21 > /sys/module/svm_accel/parameters/range_shift
        echo 0 > /sys/module/svm_accel/parameters/lock_scope
        rmmod "$(echo "${pko%.ko}" | tr - _)"
        step "rmmod-${pko%.ko}-$r" $?
    }
    r=0
    while [ $r -lt "$(cat /svm/bench.rounds)" ]; do
        if [ $((r % 2)) -eq 0 ]; then
            bench_test_hmm
            bench_svm
        else
            bench_svm
            bench_test_hmm
        fi
        r=$((r + 1))
    done
elif [ -f /svm/test_hmm.ko ]; then
    # The pid lets the host tell test_hmm's own kmemleak reports (allocated
    # by this insmod) from the payload's.
    sh -c 'echo "SVM-VM-PID insmod-test_hmm $$"; exec insmod /svm/test_hmm.ko'
    rc=$?
    step insmod-test_hmm $rc
    if [ $rc -eq 0 ]; then
        run_hmm_tests test_hmm
        run_hmm_tests_thp_never test_hmm
        rmmod test_hmm
        step rmmod-test_hmm $?
    fi
fi
echo "SVM-VM-THP thp_fault_alloc=$(($(vmstat thp_fault_alloc) - thp_before))" \
     "thp_fault_fallback=$(vmstat thp_fault_fallback)"

# Payload modules, one a line: "<file.ko> [module parameters]", loaded in
# order (unloaded in reverse below).  test_hmm is gone by now: a payload that
# registers /dev/hmm_dmirror0 (svm_accel dmirror=1) never runs beside it.
loaded=""
if [ -f /svm/modules.list ] && [ ! -f /svm/bench.rounds ]; then
    while read -r ko args <&3; do
        [ -n "$ko" ] || continue
        # shellcheck disable=SC2086  # split on purpose
        insmod "/svm/modules/$ko" $args 3<&-
        rc=$?
        step "insmod-${ko%.ko}" $rc
        [ $rc -eq 0 ] && loaded="$(echo "${ko%.ko}" | tr - _) $loaded"
    done 3< /svm/modules.list
fi
if [ ! -f /svm/bench.rounds ] && [ -e /dev/hmm_dmirror0 ] \
   && { [ -x /svm/hmm-tests ] || [ -x /svm/dmbench ]; }; then
    run_hmm_tests svm
    run_hmm_tests_thp_never svm
fi

# One program a line: "<name> [args...]" (args split at spaces, no quoting).
if [ -f /svm/progs.list ]; then
    while read -r prog args <&3; do
        [ -n "$prog" ] || continue
        echo "== BEGIN prog:$prog"
        [ -z "$args" ] || echo "SVM-VM-ARGS prog:$prog $args"
        # shellcheck disable=SC2086  # split on purpose
        "/svm/progs/$prog" $args 3<&-
        rc=$?
        echo "== END prog:$prog rc=$rc"
        step "prog:$prog" $rc
    done 3< /svm/progs.list
fi

for mod in $loaded; do
    rmmod "$mod"
    step "rmmod-$mod" $?
done
if [ -f /svm/hmmcount.ko ]; then
    rmmod hmmcount
    step rmmod-hmmcount $?
fi

# kmemleak only reports objects that were at least 5 s old when the scan
# started and stayed unreferenced over two scans (the first scan just records
# checksums).  A scan takes >10 s here, so usually no extra wait is needed.
kmemleak=1
for arg in $(cat /proc/cmdline); do
    case "$arg" in svm.kmemleak=0) kmemleak=0 ;; esac
done
if [ $kmemleak -eq 0 ]; then
    echo "kmemleak: not checked (svm.kmemleak=0: the perf kernel has none)"
elif [ -w /sys/kernel/debug/kmemleak ]; then
    t0=$(date +%s)
    echo scan > /sys/kernel/debug/kmemleak
    t1=$(date +%s)
    [ $((t1 - t0)) -ge 6 ] || sleep $((6 - (t1 - t0)))
    echo scan > /sys/kernel/debug/kmemleak
    echo "kmemleak: two scans took $(($(date +%s) - t0)) s"
    echo "== BEGIN kmemleak"
    cat /sys/kernel/debug/kmemleak
    echo "== END kmemleak"
    # Judged on the host (test_hmm has known leaks), so not a step.
    echo "SVM-VM-KMEMLEAK objects=$(grep -c '^unreferenced object' /sys/kernel/debug/kmemleak)"
else
    echo "kmemleak: /sys/kernel/debug/kmemleak missing"
    step kmemleak 1
fi

echo "SVM-VM-RESULT rc=$fails"
sync
# No ACPI in this kernel, so "poweroff" would only halt the CPU: reboot
# instead, which QEMU turns into an exit because of -no-reboot.
reboot -f
