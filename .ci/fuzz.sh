#!/usr/bin/env bash
# make fuzz: run every fuzz target for FUZZTIME (default 20s) on top of its seed corpus
# (testdata/fuzz/<target> in its package). Prints each target's executions and the total; on a
# failure prints the whole output (the failing input is saved under testdata/fuzz/<target>).
set -uo pipefail
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-20s}
targets=(
	"FuzzReader ./shared/rdb"
	"FuzzDecodeDump ./shared/rdb"
	"FuzzDecode ./shared/hostproto"
	"FuzzParseEndpoint ./shared/config"
	"FuzzStartRequest ./functions"
	"FuzzImportRequest ./functions"
	"FuzzVerifyRequest ./functions"
)
total=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
	read -r name pkg <<<"$t"
	if ! "$GO" test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" "$pkg" >"$log" 2>&1; then
		cat "$log"
		echo "make fuzz: $name ($pkg) FAILED"
		exit 1
	fi
	n=$(grep -oE 'execs: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || echo 0)
	total=$((total + n))
	printf '%-20s %-20s %12d executions, clean\n' "$name" "$pkg" "$n"
done
printf 'make fuzz: %d targets, %d executions in all, no failure (%s each)\n' "${#targets[@]}" "$total" "$FUZZTIME"
