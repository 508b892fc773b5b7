#!/usr/bin/env bash
# Instructions per device fault, per configuration, under callgrind.
#
#   scripts/bench-callgrind.sh [--bin PATH] [--faults-4k K] [--faults-2m K]
#                              [--fault-around N] [CONFIG...]
#
# CONFIG is ours, gpusvm or test_hmm (default: all three). For each configuration and each
# fault kind (4k: read faults on present 4 KiB pages; 2m: read faults on PMD-mapped THP blocks,
# one 2 MiB device leaf each), runs `bench --callgrind KIND --config CONFIG --faults K` under
# `valgrind --tool=callgrind` with collection toggled on only inside
# svm_tests::bench::measured_faults, which services exactly those K faults (setup, population
# and teardown are outside it), and prints one line per run:
#
#   CALLGRIND <config> <kind> <instructions per fault> <instructions> <faults>
#
# Instruction counts are deterministic for a given binary (one thread, the model's fixed
# hashers); `bench --with-callgrind` runs this script and puts the figures in its table.
# Without --bin, builds and uses target/release/bench.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=
k4=1024
k2=64
fa=1
configs=()
while [ $# -gt 0 ]; do
	case "$1" in
	--bin) bin=$2; shift 2 ;;
	--faults-4k) k4=$2; shift 2 ;;
	--faults-2m) k2=$2; shift 2 ;;
	--fault-around) fa=$2; shift 2 ;;
	-h|--help) sed -n '2,20p' "$0"; exit 0 ;;
	-*) echo "bench-callgrind: unknown option $1" >&2; exit 2 ;;
	*) configs+=("$1"); shift ;;
	esac
done
[ ${#configs[@]} -gt 0 ] || configs=(ours gpusvm test_hmm)

if ! command -v valgrind >/dev/null; then
	echo "bench-callgrind: installing valgrind" >&2
	if [ "$(id -u)" = 0 ]; then
		apt-get install -y valgrind >&2 || { apt-get update >&2 && apt-get install -y valgrind >&2; }
	else
		sudo apt-get install -y valgrind >&2
	fi
fi
if [ -z "$bin" ]; then
	(cd "$root" && cargo build --release -p svm-tests --bin bench >&2)
	bin=$root/target/release/bench
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for c in "${configs[@]}"; do
	for kind in 4k 2m; do
		if [ "$kind" = 4k ]; then k=$k4; else k=$k2; fi
		out=$tmp/callgrind.$c.$kind
		valgrind --tool=callgrind --callgrind-out-file="$out" \
			--toggle-collect='*measured_faults*' \
			"$bin" --callgrind "$kind" --config "$c" --faults "$k" --fault-around "$fa" \
			>"$tmp/log" 2>&1 || { cat "$tmp/log" >&2; exit 1; }
		# "totals:" (or "summary:") holds the collected Ir; with --toggle-collect that is
		# exactly what ran inside measured_faults.
		ir=$(awk '/^(totals|summary):/ { print $2; exit }' "$out")
		[ -n "$ir" ] && [ "$ir" -gt 0 ] || { echo "bench-callgrind: no Ir in $out" >&2; exit 1; }
		echo "CALLGRIND $c $kind $((ir / k)) $ir $k"
	done
done
