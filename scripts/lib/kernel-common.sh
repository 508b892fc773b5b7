# shellcheck shell=bash disable=SC2034  # variables are for the sourcing scripts
# Shared by kernel-build.sh, kdir.sh, module-build.sh and vm-run.sh: where the
# kernel build lives and how make must be invoked.  Source it, don't run it.

SVM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SVM_CACHE="${SVM_CACHE:-$HOME/.cache/svm}"

# Bump when a change in kernel-build.sh must force a rebuild.
KBUILD_SCRIPT_VERSION=1

KERNEL_PKG=linux-source-6.12
KERNEL_TARBALL=/usr/src/linux-source-6.12.tar.xz
# Flavour: "debug" (default: lockdep, KASAN, kmemleak, ...; what CI tests) or "perf" (the
# same fragment up to its "# --- debugging" section, plus kernel/perf.fragment: the benchmark
# kernel of vm-bench.sh).
SVM_KERNEL_FLAVOUR="${SVM_KERNEL_FLAVOUR:-debug}"
case "$SVM_KERNEL_FLAVOUR" in
    debug) KERNEL_FRAGMENT="$SVM_ROOT/kernel/config.fragment" ;;
    perf)
        mkdir -p "$SVM_CACHE"
        KERNEL_FRAGMENT="$SVM_CACHE/config.fragment.perf"
        { sed '/^# --- debugging/,$d' "$SVM_ROOT/kernel/config.fragment"
          cat "$SVM_ROOT/kernel/perf.fragment"; } > "$KERNEL_FRAGMENT.$$"
        mv "$KERNEL_FRAGMENT.$$" "$KERNEL_FRAGMENT"
        ;;
    *) echo "error: SVM_KERNEL_FLAVOUR must be debug or perf" >&2; exit 1 ;;
esac

# Debian's rustc-web (with rust-web-src) is the only rustc here that has the
# library sources the kernel needs; the rustup one on PATH has no rust-src.
KRUSTC=/usr/bin/rustc
KBINDGEN="$HOME/.cargo/bin/bindgen"
export LIBCLANG_PATH=/usr/lib/llvm-19/lib

# The make invocation every kernel/module build uses.
KMAKE=(make LLVM=-19 "RUSTC=$KRUSTC" "BINDGEN=$KBINDGEN")

# Cache key: everything that changes the build output.  Needs the toolchain
# installed (kernel-build.sh installs it before calling this).
kernel_key() {
    {
        echo "script=$KBUILD_SCRIPT_VERSION"
        dpkg-query -W -f='kernel=${Version}\n' "$KERNEL_PKG"
        "$KRUSTC" --version
        clang-19 --version | head -n1
        "$KBINDGEN" --version
        cat "$KERNEL_FRAGMENT"
    } | sha256sum | cut -c1-12
}

# Sets KCACHE (per-key cache dir) and KDIR (the configured, built tree).
kernel_paths() {
    KCACHE="$SVM_CACHE/kernel-$(kernel_key)"
    KDIR="$KCACHE/linux"
}

die() { echo "error: $*" >&2; exit 1; }
