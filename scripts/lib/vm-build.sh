# shellcheck shell=bash disable=SC2034  # VMTESTS and KDIR are for the sourcing scripts
# Shared by vm-test.sh and vm-storm.sh: builds what an svm_accel VM run needs.
# Source it after lib/kernel-common.sh, from $SVM_ROOT; then call vm_build.
# Sets KDIR, VMTESTS and DMBENCH (static binaries of vmtests/) and HMMCOUNT
# (tools/hmmcount/hmmcount.ko).

vm_build() {
    # --- kernel: cached; never start a second build while one runs (it would
    # wait on the cache lock anyway, but a build for other inputs would compete
    # for the CPUs).
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

    # --- the uAPI header's kernel-doc: no warning, every member documented -------
    local kd
    kd="$("$KDIR/scripts/kernel-doc" -none -Wall include/uapi/drm/svm_accel.h 2>&1)"
    [ -z "$kd" ] || { echo "$kd"; die "kernel-doc warnings in include/uapi/drm/svm_accel.h"; }
    echo "== kernel-doc: include/uapi/drm/svm_accel.h clean"

    # --- module ---------------------------------------------------------------
    echo "== building svm_accel.ko"
    local mlog
    mlog="$(mktemp)"
    if ! scripts/module-build.sh . modules > "$mlog" 2>&1; then
        cat "$mlog"; rm -f "$mlog"; die "module build failed"
    fi
    grep -vE '^make|^  (CC|LD|RUSTC|MODPOST)|\.ko$' "$mlog" || true   # warnings
    rm -f "$mlog"
    echo "== building tools/hmmcount/hmmcount.ko"
    mlog="$(mktemp)"
    if ! scripts/module-build.sh tools/hmmcount modules > "$mlog" 2>&1; then
        cat "$mlog"; rm -f "$mlog"; die "hmmcount module build failed"
    fi
    rm -f "$mlog"
    HMMCOUNT=tools/hmmcount/hmmcount.ko

    # --- vmtests (static glibc: the initramfs has no libc) ----------------------
    echo "== building vmtests (static)"
    (
        cd vmtests || exit 1
        RUSTFLAGS="-C target-feature=+crt-static" \
            cargo build --release --quiet --target x86_64-unknown-linux-gnu || exit 1
        # svm-stat's own unit test (its core also runs in the VM, in the vmtest debugfs).
        out=$(RUSTFLAGS="-C target-feature=+crt-static" \
            cargo test --release --quiet --target x86_64-unknown-linux-gnu --bin svm-stat 2>&1) ||
            { echo "$out"; echo "svm-stat unit test failed"; exit 1; }
        echo "svm-stat: $(echo "$out" | grep -E '^test result')"
    ) || die "vmtests build or svm-stat test failed"
    VMTESTS=vmtests/target/x86_64-unknown-linux-gnu/release/svm-vmtests
    DMBENCH=vmtests/target/x86_64-unknown-linux-gnu/release/dmbench
}
