#!/usr/bin/env bash
# Build an out-of-tree module (Kbuild file in <module dir>) against the svm
# kernel: scripts/module-build.sh <module dir> [make targets, default: modules]
# e.g. scripts/module-build.sh kernel/smoke clean
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/kernel-common.sh"

(($# >= 1)) || die "usage: $0 <module dir> [make targets]"
[[ -d "$1" ]] || die "no such directory: $1"
# Kbuild needs an absolute M=; #[path] includes are relative to the sources.
MDIR="$(cd "$1" && pwd)"
shift
KDIR="$("$(dirname "${BASH_SOURCE[0]}")/kdir.sh")"

targets=("$@")
((${#targets[@]})) || targets=(modules)
"${KMAKE[@]}" -C "$KDIR" M="$MDIR" -j"$(nproc)" "${targets[@]}"
if [[ " ${targets[*]} " == *" modules "* ]]; then
    ls "$MDIR"/*.ko
    for ko in "$MDIR"/*.ko; do
        "$(dirname "${BASH_SOURCE[0]}")/check-stack.sh" "$ko" >&2
    done
fi
