#!/usr/bin/env bash
# cargo-mutants over the shared engine sources (slow: not part of CI). Each mutant of pgtable
# is judged by pgtable's unit tests plus the svm-tests suites; each mutant of svm by the
# svm-tests suites (protocol, property, storm). Unoptimised builds (profile `mutants`): the
# storm test sizes itself down there. Results land in mutants.out*/.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants
what=${1:-all}
common=(--exclude pgtable/src/errno.rs --exclude svm/src/stats.rs --timeout 120 --jobs 1 --profile mutants)
if [ "$what" = all ] || [ "$what" = pgtable ]; then
  cargo mutants "${common[@]}" -p pgtable --test-package pgtable --test-package svm-tests \
    -o mutants.out.pgtable || true
fi
if [ "$what" = all ] || [ "$what" = svm ]; then
  cargo mutants "${common[@]}" -p svm --test-package svm-tests \
    -o mutants.out.svm || true
fi
for d in mutants.out.pgtable mutants.out.svm; do
  [ -d "$d/mutants.out" ] || continue
  printf '%s: caught %s, missed %s, timeout %s, unviable %s\n' "$d" \
    "$(wc -l <"$d/mutants.out/caught.txt")" "$(wc -l <"$d/mutants.out/missed.txt")" \
    "$(wc -l <"$d/mutants.out/timeout.txt")" "$(wc -l <"$d/mutants.out/unviable.txt")"
done
