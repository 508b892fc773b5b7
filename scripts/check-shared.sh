#!/usr/bin/env bash
# The kernel module compiles the shared engine files itself (#[path] in driver/svm_accel.rs and
# driver/pgtable.rs): a file added to svm/src or pgtable/src but not to the module, or the other
# way round, would build and test fine on one side only. Fails if the lists differ.
set -euo pipefail
cd "$(dirname "$0")/.."

# crate_mods LIB: the modules a crate's lib.rs declares, except the #[cfg(test)] one.
crate_mods() { awk '/^#\[cfg\(test\)\]/ { skip = 1; next } /^(pub )?mod [a-z_]+;/ {
    if (!skip) { sub(/^(pub )?mod /, ""); sub(/;.*/, ""); print } skip = 0 }' "$1" | sort; }
# module_files DRIVER DIR: the files of DIR the module pulls in with #[path].
module_files() { grep -oE "#\[path = \"\.\./$2/([a-z_]+)\.rs\"\]" "$1" |
    sed -E "s|.*/([a-z_]+)\.rs.*|\1|" | sort; }

rc=0
for pair in "svm/src/lib.rs driver/svm_accel.rs svm/src" "pgtable/src/lib.rs driver/pgtable.rs pgtable/src"; do
    read -r lib drv dir <<<"$pair"
    if ! diff <(crate_mods "$lib") <(module_files "$drv" "$dir") >/dev/null; then
        echo "check-shared: $lib and $drv disagree on the shared files (< crate only, > module only):"
        diff <(crate_mods "$lib") <(module_files "$drv" "$dir") | grep -E '^[<>]' || true
        rc=1
    fi
done
# The module's `pgtable` re-exports what the crate does (the shared files name them
# `super::pgtable::X`): compare the `pub use` items, whitespace aside.
reexports() { tr '\n' ' ' <"$1" | grep -oE 'pub use [^;]+;' | tr -s ' ' | sed 's/{ /{/; s/, }/}/'; }
if [ "$(reexports pgtable/src/lib.rs)" != "$(reexports driver/pgtable.rs)" ]; then
    echo "check-shared: pgtable/src/lib.rs and driver/pgtable.rs re-export different items:"
    diff <(reexports pgtable/src/lib.rs) <(reexports driver/pgtable.rs) || true
    rc=1
fi
((rc == 0)) && echo "check-shared: the module compiles every shared file of svm/ and pgtable/, and no other"
exit $rc
