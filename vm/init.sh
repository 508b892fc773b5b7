#!/bin/busybox sh
# shellcheck shell=dash
# PID 1 of the svm test VM (copied to /init by scripts/vm-run.sh).
# Runs: hmm-tests against test_hmm, then the --module/--prog payload, then a
# kmemleak scan.  Every step prints "SVM-VM-STEP label=<l> rc=<n>"; the last
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

thp_before=$(vmstat thp_fault_alloc)
if [ -x /svm/hmm-tests ]; then
    # The pid lets the host tell test_hmm's own kmemleak reports (allocated
    # by this insmod) from the payload's.
    sh -c 'echo "SVM-VM-PID insmod-test_hmm $$"; exec insmod /svm/test_hmm.ko'
    rc=$?
    step insmod-test_hmm $rc
    if [ $rc -eq 0 ]; then
        echo "== BEGIN hmm-tests [test_hmm]"
        /svm/hmm-tests
        echo "== END hmm-tests [test_hmm] rc=$?"
        rmmod test_hmm
        step rmmod-test_hmm $?
    fi
fi
echo "SVM-VM-THP thp_fault_alloc=$(($(vmstat thp_fault_alloc) - thp_before))" \
     "thp_fault_fallback=$(vmstat thp_fault_fallback)"

# Payload modules, loaded in the order given (unloaded in reverse below).
loaded=""
for ko in $(cat /svm/modules.list 2>/dev/null); do
    insmod "/svm/modules/$ko"
    rc=$?
    step "insmod-${ko%.ko}" $rc
    [ $rc -eq 0 ] && loaded="$(echo "${ko%.ko}" | tr - _) $loaded"
done

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

# kmemleak only reports objects that were at least 5 s old when the scan
# started and stayed unreferenced over two scans (the first scan just records
# checksums).  A scan takes >10 s here, so usually no extra wait is needed.
if [ -w /sys/kernel/debug/kmemleak ]; then
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
