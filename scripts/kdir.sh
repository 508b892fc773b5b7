#!/usr/bin/env bash
# Print the built kernel tree (KDIR) for the current inputs, without building.
# --cache prints the per-key cache dir instead.  Exits 1 if not built yet.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/kernel-common.sh"

if ! command -v clang-19 >/dev/null || [[ ! -x "$KRUSTC" || ! -x "$KBINDGEN" ]]; then
    die "toolchain missing; run scripts/kernel-build.sh"
fi
kernel_paths
[[ -f "$KCACHE/build.stamp" ]] || die "kernel not built ($KCACHE); run scripts/kernel-build.sh"
if [[ "${1:-}" == --cache ]]; then echo "$KCACHE"; else echo "$KDIR"; fi
