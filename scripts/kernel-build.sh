#!/usr/bin/env bash
# Reproducible debug kernel for svm: Linux 6.12 (Debian linux-source-6.12),
# tinyconfig + kernel/config.fragment, clang-19 + Debian rustc, KASAN, lockdep,
# kmemleak, ... Builds bzImage and modules (incl. lib/test_hmm.ko) in a cache
# dir outside the repo.  Idempotent: a rerun with unchanged inputs only checks
# the stamp.  The last line printed is KDIR=<build dir>.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/kernel-common.sh"

JOBS="${JOBS:-$(nproc)}"

APT_PKGS=(linux-source-6.12 clang-19 lld-19 llvm-19 libclang-19-dev rustc-web
          rust-web-src flex bison bc libelf-dev libssl-dev cpio qemu-system-x86
          busybox-static gcc make)

install_deps() {
    local missing=() p
    for p in "${APT_PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' \
            || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "== installing: ${missing[*]}"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    fi
    # Debian's bindgen is too old for 6.12's Rust support.
    if [[ ! -x "$KBINDGEN" ]]; then
        echo "== cargo install bindgen-cli"
        cargo install --locked bindgen-cli
    fi
}

# Every `CONFIG_X=y|m` of the fragment must be in .config verbatim, and every
# `# CONFIG_X is not set` must not be enabled.  olddefconfig silently drops
# options whose dependencies are missing; we want to hear about it.
check_fragment() {
    local bad=() line opt val
    while IFS= read -r line; do
        if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
            opt=${BASH_REMATCH[1]} val=${BASH_REMATCH[2]}
            grep -qxF "$opt=$val" "$KDIR/.config" \
                || bad+=("$opt=$val (got: $(grep -E "^$opt=|^# $opt is not set" "$KDIR/.config" || echo absent))")
        elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
            opt=${BASH_REMATCH[1]}
            if grep -qE "^$opt=[ym]" "$KDIR/.config"; then
                bad+=("$opt should be unset (got: $(grep -E "^$opt=" "$KDIR/.config"))")
            fi
        fi
    done < "$KERNEL_FRAGMENT"
    if ((${#bad[@]})); then
        echo "error: kernel/config.fragment options not in .config:" >&2
        printf '  %s\n' "${bad[@]}" >&2
        exit 1
    fi
}

# logged <log> <cmd...>: append the command's output to <log>; on failure
# show its tail and stop.
logged() {
    local log=$1; shift
    if ! "$@" >> "$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "failed: $* (full log: $log)"
    fi
}

main() {
    install_deps
    kernel_paths
    up_to_date() {
        [[ -f "$KCACHE/build.stamp" ]] || return 1
        echo "kernel up to date ($(cat "$KCACHE/build-time.txt" 2>/dev/null || echo '?'))"
        echo "KDIR=$KDIR"
    }
    up_to_date && return
    # One kernel build at a time on this machine, whatever its key: two would
    # fight over 2 cores (and two of the same key over one tree).
    mkdir -p "$KCACHE"
    exec 9>"$SVM_CACHE/kernel-build.lock"
    if ! flock -n 9; then
        echo "== another kernel build is running; waiting for it"
        flock 9
    fi
    up_to_date && return

    local t0; t0=$(date +%s)

    # Unpack into a temp dir and rename, so an interrupted tar never leaves a
    # half tree that looks complete.
    if [[ ! -d "$KDIR" ]]; then
        echo "== unpacking $KERNEL_TARBALL"
        rm -rf "$KCACHE/unpack.tmp"
        mkdir "$KCACHE/unpack.tmp"
        tar -C "$KCACHE/unpack.tmp" -xf "$KERNEL_TARBALL"
        mv "$KCACHE/unpack.tmp/linux-source-6.12" "$KDIR"
        rmdir "$KCACHE/unpack.tmp"
    fi

    cd "$KDIR"
    "${KMAKE[@]}" rustavailable
    if [[ ! -f "$KCACHE/config.stamp" ]]; then
        echo "== configuring: tinyconfig + kernel/config.fragment (log: $KCACHE/config.log)"
        : > "$KCACHE/config.log"
        logged "$KCACHE/config.log" "${KMAKE[@]}" tinyconfig
        # -m: merge only; olddefconfig then resolves with the same make flags
        # (so RUST_IS_AVAILABLE sees our rustc/bindgen).
        logged "$KCACHE/config.log" scripts/kconfig/merge_config.sh -m .config "$KERNEL_FRAGMENT"
        logged "$KCACHE/config.log" "${KMAKE[@]}" olddefconfig
        check_fragment
        touch "$KCACHE/config.stamp"
    fi

    echo "== building bzImage + modules (-j$JOBS); follow with: tail -f $KCACHE/build.log"
    : > "$KCACHE/build.log"
    logged "$KCACHE/build.log" "${KMAKE[@]}" -j"$JOBS" bzImage modules
    [[ -f arch/x86/boot/bzImage ]] || die "no bzImage, see $KCACHE/build.log"
    [[ -f lib/test_hmm.ko ]] || die "no lib/test_hmm.ko, see $KCACHE/build.log"

    local t1; t1=$(date +%s)
    local wall=$((t1 - t0))
    printf 'build wall time: %dm%02ds (%d s, -j%s, %s)\n' $((wall / 60)) $((wall % 60)) \
        "$wall" "$JOBS" "$(date -u +%FT%TZ)" | tee "$KCACHE/build-time.txt"
    touch "$KCACHE/build.stamp"
    echo "KDIR=$KDIR"
}

main "$@"
