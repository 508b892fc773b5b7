# shellcheck shell=bash
# Sourced by the benchmark scripts (vm-bench.sh, vm-qbench.sh) after kernel-common.sh, with
# SVM_KERNEL_FLAVOUR=perf.

# bench_build NAME [TOOL...]: waits for a kernel build another script runs, builds (or finds
# cached) this flavour's kernel, builds the module (and each tools/TOOL module) in a copy of
# the sources under the kernel's cache, $KCACHE/NAME (the repo's own build products belong to
# the debug kernel), and the static vmtests. Sets KDIR, KCACHE and MOD.
bench_build() {
    local name="$1" t
    shift
    while pgrep -f 'scripts/kernel-build\.sh' >/dev/null; do
        echo "== waiting for a running kernel build to finish"; sleep 20
    done
    scripts/kernel-build.sh | tail -n 2
    KDIR="$(scripts/kdir.sh)"
    KCACHE="$(scripts/kdir.sh --cache)"
    MOD="$KCACHE/$name"
    rm -rf "$MOD"; mkdir -p "$MOD/tools"
    cp -r Kbuild driver svm pgtable include "$MOD/"
    for t in "$@"; do cp -r "tools/$t" "$MOD/tools/"; done
    find "$MOD" \( -name '*.o' -o -name '*.ko' -o -name '*.cmd' -o -name '*.mod*' \) -delete
    scripts/module-build.sh "$MOD" modules > "$MOD/build.log" 2>&1 ||
        { cat "$MOD/build.log"; die "module build failed"; }
    for t in "$@"; do
        scripts/module-build.sh "$MOD/tools/$t" modules >> "$MOD/build.log" 2>&1 ||
            { cat "$MOD/build.log"; die "$t build failed"; }
    done
    (
        cd vmtests
        RUSTFLAGS="-C target-feature=+crt-static" \
            cargo build --release --quiet --target x86_64-unknown-linux-gnu
    )
}
