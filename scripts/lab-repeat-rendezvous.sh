#!/usr/bin/env bash
# Repeats the rendezvous lab scenarios (examples/tests/lab_rendezvous.rs,
# or with SUITE=lab_hub the hub's, examples/tests/lab_hub.rs) and prints:
# passes per scenario, and per pair the median and worst time to an
# encrypted stream (each side) and how often uTP and TCP won.
#
#   sudo scripts/lab-repeat-rendezvous.sh [RUNS=20]
#   sudo SUITE=lab_hub scripts/lab-repeat-rendezvous.sh [RUNS=20]
#
# Needs root and the lab packages (see .ci/run).
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"
if [ "$(id -u)" != 0 ]; then echo "needs root"; exit 1; fi
export CRUST_LAB=1
suite="${SUITE:-lab_rendezvous}"
out=$(mktemp -d)
cargo test -q -p crust-examples --test "$suite" --no-run
for i in $(seq 1 "$runs"); do
    cargo test -p crust-examples --test "$suite" -- --ignored lab_ --test-threads=2 --nocapture \
        >"$out/run.$i.log" 2>&1 || true
    printf 'run %d/%d done\n' "$i" "$runs" >&2
done
echo "== passes over $runs runs"
cat "$out"/*.log | grep -E '^test lab_.* \.\.\. (ok|FAILED)$' | \
    awk '{n[$2]++; if ($4=="ok") ok[$2]++} END {for (t in n) printf "%-55s %d/%d\n", t, ok[t]+0, n[t]}' | sort
echo "== time to an encrypted stream (ms, both sides pooled) and the winning protocol"
grep -h 'FIGURE pair=[^ ]* ms_a=[0-9]* ms_b=[0-9]* .*path=[a-z_-]*' "$out"/*.log | \
    sed -E 's/.*pair=([^ ]+) ms_a=([0-9]+) ms_b=([0-9]+) .*path=[^ ]*over[-_]([a-z]+).*/\1 \2 \4\n\1 \3 \4/' | \
    sort -k1,1 -k2,2n | awk '
    function report() {
        if (c == 0) return;
        printf "%-22s n=%-3d median=%s ms  worst=%s ms  utp=%d tcp=%d (streams)\n", p, c, ms[int((c+1)/2)], ms[c], u/2, t/2
    }
    $1 != p { report(); p = $1; c = 0; u = 0; t = 0 }
    { c++; ms[c] = $2; if ($3 == "utp") u++; else t++ }
    END { report() }'
echo "== hard x hard failures (ms)"
grep -h '^FIGURE pair=.*failed' "$out"/*.log | sed -E 's/.*ms=([0-9]+).*/\1/' | sort -n | awk '{a[NR]=$1} END {if (NR) printf "n=%d median=%s worst=%s\n", NR, a[int((NR+1)/2)], a[NR]}'
echo "(logs in $out)"
