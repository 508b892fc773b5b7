#!/usr/bin/env bash
# Soak (not CI; hours): the whole VM suite N times in a row on the debug kernel (any failure or
# kernel report is a flake to chase, never retried away), then the in-VM fault storm on the
# debug kernel and on the non-debug "perf" kernel for long enough to reach the issue 9 figures
# (>= 10^5 device faults debug, >= 10^6 perf), then the long fuzzer run. Prints one table.
#
#   scripts/soak.sh [--runs N] [--storm-debug SECS] [--storm-perf SECS] [--fuzz-calls N]
#                   [--skip-suite] [--skip-storm] [--skip-fuzz]
#
# Defaults: 10 runs, 1800 s debug storm, 1800 s perf storm, 100000 fuzz calls. Logs stay in
# ~/.cache/svm/vm-logs; the table gives each log's name.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=10 storm_debug=1800 storm_perf=1800 fuzz_calls=100000
suite=1 storm=1 fuzz=1
while (($#)); do
    case "$1" in
        --runs) runs=$2; shift 2 ;;
        --storm-debug) storm_debug=$2; shift 2 ;;
        --storm-perf) storm_perf=$2; shift 2 ;;
        --fuzz-calls) fuzz_calls=$2; shift 2 ;;
        --skip-suite) suite=0; shift ;;
        --skip-storm) storm=0; shift ;;
        --skip-fuzz) fuzz=0; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "soak: unknown option $1" >&2; exit 2 ;;
    esac
done

rows=()
fails=0
row() { rows+=("$(printf '| %-34s | %-6s | %s |' "$1" "$2" "$3")"); [[ $2 == PASS ]] || fails=$((fails + 1)); }
logname() { grep -oE '[^ ]*/vm-logs/[^ ]*\.log' "$1" | tail -n1; }

if ((suite)); then
    for i in $(seq 1 "$runs"); do
        out=$(mktemp)
        t0=$(date +%s)
        if scripts/vm-test.sh --quiet >"$out" 2>&1; then r=PASS; else r=FAIL; fi
        row "VM suite run $i/$runs" "$r" "$(( $(date +%s) - t0 )) s, $(grep -E '^[0-9]+ passed' "$out" | tail -n1) $(logname "$out")"
        [[ $r == PASS ]] || tail -n 40 "$out"
        rm -f "$out"
    done
fi

storm_row() {
    local flavour=$1 secs=$2 out; out=$(mktemp)
    local t0; t0=$(date +%s)
    if SVM_KERNEL_FLAVOUR=$flavour scripts/vm-storm.sh --seconds "$secs" --timeout $((secs + 900)) \
        >"$out" 2>&1; then r=PASS; else r=FAIL; fi
    local faults lost
    faults=$(grep -E '^\| device faults ' "$out" | grep -oE '[0-9]+' | tail -n1)
    lost=$(grep -E 'lost writes' "$out" | grep -oE '[0-9]+' | tail -n1)
    row "storm, $flavour kernel, $secs s" "$r" "device faults ${faults:-?}, lost writes ${lost:-?}, $(( $(date +%s) - t0 )) s $(logname "$out")"
    [[ $r == PASS ]] || tail -n 40 "$out"
    rm -f "$out"
}
if ((storm)); then
    storm_row debug "$storm_debug"
    storm_row perf "$storm_perf"
fi

if ((fuzz)); then
    out=$(mktemp)
    t0=$(date +%s)
    if scripts/vm-fuzz.sh --calls "$fuzz_calls" >"$out" 2>&1; then r=PASS; else r=FAIL; fi
    row "fuzzer, $fuzz_calls calls" "$r" "$(grep -E '^fuzz: ' "$out" | tail -n1), $(( $(date +%s) - t0 )) s $(logname "$out")"
    [[ $r == PASS ]] || tail -n 40 "$out"
    rm -f "$out"
fi

echo
printf '| %-34s | %-6s | %s |\n' soak result details
printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..36})" "--------" "---------"
printf '%s\n' "${rows[@]}"
echo "soak: $(( ${#rows[@]} - fails )) passed, $fails failed"
((fails == 0))
