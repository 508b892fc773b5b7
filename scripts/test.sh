#!/usr/bin/env bash
# The whole test suite: unit + property + storm tests (release), the loom models, the teeth
# check (every protocol step, when deleted, makes a test fail), then the kernel side: the
# kernel build (installs its packages; cached by inputs outside the repo), the module, and the
# QEMU run (hmm-tests against test_hmm, the in-VM svm_accel tests). Prints each runner's
# summary. SVM_SKIP_TEETH=1 / SVM_SKIP_VM=1 skip those parts while iterating.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
step() { printf '\n==== %s\n' "$*"; }

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -q -- -D warnings
scripts/check-shared.sh
scripts/check-docs.sh

step "unit, property and storm tests (release)"
cargo test --workspace --release 2>&1 | tee "$logs/test.log" | grep -E '^(test result|running|     Running)|FAILED|panicked' || true
if grep -q 'test result: FAILED' "$logs/test.log" || ! grep -q 'test result: ok' "$logs/test.log"; then
  echo "cargo test failed"; grep -E 'panicked|FAILED' "$logs/test.log" | head -40; exit 1
fi

step "loom models (release, bounded preemption): the engine on the model, and the model's notifier"
export LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-3}
: >"$logs/loom.log"
for t in "svm-tests loom" "model loom_notifier"; do
  read -r pkg test <<<"$t"
  RUSTFLAGS="--cfg loom" cargo test --release -p "$pkg" --test "$test" --target-dir target/loom -- --nocapture 2>&1 |
    tee -a "$logs/loom.log" | grep -E '^(test |test result)|loom:|panicked' || true
done
if grep -q 'test result: FAILED' "$logs/loom.log" || [ "$(grep -c 'test result: ok' "$logs/loom.log")" != 2 ]; then
  echo "loom suite failed"; tail -50 "$logs/loom.log"; exit 1
fi

if [ "${SVM_SKIP_TEETH:-0}" != 1 ]; then
  step "teeth: each deleted protocol step must make a test fail"
  scripts/teeth.sh
fi

if [ "${SVM_SKIP_VM:-0}" != 1 ]; then
  step "kernel: build (cached by inputs), module, QEMU: hmm-tests vs test_hmm, svm_accel in-VM tests"
  scripts/vm-test.sh --quiet
fi
