#!/usr/bin/env bash
# cargo-mutants over the shared engine sources (slow: not part of CI; about 2.5 h on 2 cores).
# Results and the catalogue of equivalent mutants: Documentation/mutation.rst.
#
#   scripts/mutants.sh [pgtable|svm|all]      (default all; output in mutants.out.<part>/)
#
# Each part runs in three passes, each over what the previous one left alive (`--iterate`):
#   1. quick: pgtable's unit tests, or svm-tests' protocol and property tests (seconds each);
#   2. full: every svm-tests suite, the storms scaled down by SVM_STORM_SCALE (50);
#   3. loom: the loom models (`--cfg loom`), for protocol steps only an interleaving shows.
# A mutant that hangs until the timeout counts as killed (a fault or walk that never ends).
# The baseline is skipped: cargo-mutants 27 runs it with the mutated package's tests only,
# where `--test` selections of svm-tests do not exist. `cargo test` runs it instead.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants
what=${1:-all}
export SVM_STORM_SCALE=${SVM_STORM_SCALE:-50} LOOM_MAX_PREEMPTIONS=3
common=(--baseline=skip --build-timeout 900 --jobs 1 --profile mutants
  --exclude pgtable/src/errno.rs --exclude svm/src/stats.rs)

# pass OUT PASS-ARGS... : one pass, iterating over OUT's earlier results if there are any.
# Timeouts are killed: they join caught.txt (which --iterate skips) and timeouts.txt.
pass() {
  local out=$1; shift
  local it=()
  [ -f "$out/mutants.out/outcomes.json" ] && it=(--iterate)
  cargo mutants "${common[@]}" "${it[@]}" -o "$out" "$@" || true
  [ -f "$out/mutants.out/timeout.txt" ] || return 0
  tee -a "$out/timeouts.txt" <"$out/mutants.out/timeout.txt" >>"$out/mutants.out/caught.txt"
}
quick_svm=(--cargo-test-arg=--test=protocol --cargo-test-arg=--test=proptest_sm)
# The loom pass builds at the mutants profile too (cargo refuses --release beside --profile).
loom=(--cargo-test-arg=--test=loom)

if [ "$what" = all ] || [ "$what" = pgtable ]; then
  o=mutants.out.pgtable
  pass $o --timeout 60 -p pgtable --test-package pgtable
  pass $o --timeout 180 -p pgtable --test-package pgtable --test-package svm-tests
  RUSTFLAGS="--cfg loom" pass $o --timeout 600 -p pgtable --test-package svm-tests "${loom[@]}"
fi
if [ "$what" = all ] || [ "$what" = svm ]; then
  o=mutants.out.svm
  pass $o --timeout 120 -p svm --test-package svm-tests "${quick_svm[@]}"
  pass $o --timeout 180 -p svm --test-package svm-tests
  RUSTFLAGS="--cfg loom" pass $o --timeout 600 -p svm --test-package svm-tests "${loom[@]}"
fi
# The survivors of the last pass are the ones to kill or to argue equivalent in the doc.
for d in mutants.out.pgtable mutants.out.svm; do
  [ -d "$d/mutants.out" ] || continue
  printf '%s: %s mutants, %s survive (%s/mutants.out/missed.txt), %s timed out\n' "$d" \
    "$(( $(cat "$d/mutants.out/previously_caught.txt" 2>/dev/null | wc -l) + \
         $(grep -c '"name"' "$d/mutants.out/mutants.json") ))" \
    "$(wc -l <"$d/mutants.out/missed.txt")" "$d" "$(sort -u "$d/timeouts.txt" 2>/dev/null | wc -l)"
done
