#!/usr/bin/env bash
# cargo-mutants over the shared engine sources (slow: not part of CI). Each mutant of pgtable
# is judged by pgtable's unit tests plus the svm-tests suites; each mutant of svm by the
# svm-tests suites (protocol, property, storm). Profile `mutants` (opt-level 1, no debuginfo)
# and SVM_STORM_SCALE keep each mutant's build and test to seconds. Results land in mutants.out*/.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants
what=${1:-all}
common=(--exclude pgtable/src/errno.rs --exclude svm/src/stats.rs --timeout 120 --jobs 1 --profile mutants)
if [ "$what" = all ] || [ "$what" = pgtable ]; then
  cargo mutants "${common[@]}" -p pgtable --test-package pgtable --test-package svm-tests \
    -o mutants.out.pgtable || true
fi
export SVM_STORM_SCALE=${SVM_STORM_SCALE:-50}
if [ "$what" = all ] || [ "$what" = svm ]; then
  # The protocol files first, then the fault path (the largest file).
  cargo mutants "${common[@]}" -p svm --test-package svm-tests -o mutants.out.svm \
    -f svm/src/invalidate.rs -f svm/src/gc.rs -f svm/src/range.rs -f svm/src/engine.rs \
    -f svm/src/config.rs || true
  cargo mutants "${common[@]}" -p svm --test-package svm-tests -o mutants.out.svm-fault \
    -f svm/src/fault.rs || true
fi
for d in mutants.out.pgtable mutants.out.svm mutants.out.svm-fault; do
  [ -d "$d/mutants.out" ] || continue
  printf '%s: caught %s, missed %s, timeout %s, unviable %s\n' "$d" \
    "$(wc -l <"$d/mutants.out/caught.txt")" "$(wc -l <"$d/mutants.out/missed.txt")" \
    "$(wc -l <"$d/mutants.out/timeout.txt")" "$(wc -l <"$d/mutants.out/unviable.txt")"
done
