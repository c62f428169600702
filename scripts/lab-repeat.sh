#!/usr/bin/env bash
# Repeats the nat_traversal network-lab scenarios and prints the figures the
# issue asks for: passes per scenario, and per punched pair the median and
# worst time to punch and the probes sent per success.
#
#   sudo scripts/lab-repeat.sh [RUNS=20] [TEST-BINARY...]
#
# FILTER=name runs only the scenarios whose name contains it.
# Each run executes the whole test binary (scenarios in parallel, as CI does
# with --test-threads). Needs root and the lab packages (see .ci/run).
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"
shift || true
bins=("$@")
[ ${#bins[@]} -eq 0 ] && bins=(lab_punch)
if [ "$(id -u)" != 0 ]; then echo "needs root"; exit 1; fi
export CRUST_LAB=1
out=$(mktemp -d)
cargo test -q -p nat_traversal "${bins[@]/#/--test=}" --no-run 2>/dev/null || \
    cargo test -p nat_traversal $(printf -- '--test %s ' "${bins[@]}") --no-run
for i in $(seq 1 "$runs"); do
    for b in "${bins[@]}"; do
        cargo test -p nat_traversal --test "$b" -- --ignored --test-threads=4 --nocapture ${FILTER:-} \
            >"$out/$b.$i.log" 2>&1 || true
    done
    printf 'run %d/%d done\n' "$i" "$runs" >&2
done
echo "== passes over $runs runs"
cat "$out"/*.log | grep -E '^test lab_.* \.\.\. (ok|FAILED)$' | \
    awk '{n[$2]++; if ($4=="ok") ok[$2]++} END {for (t in n) printf "%-55s %d/%d\n", t, ok[t]+0, n[t]}' | sort
echo "== time to punch (ms, per side) and probes sent per success"
grep -h '^FIGURE pair=.* side=' "$out"/*.log | grep -v failed | \
    sed -E 's/.*pair=([^ ]+) side=[ab] ms=([0-9]+) probes=([0-9]+).*/\1 \2 \3/' | sort -k1,1 -k2,2n | \
    awk '
    function report() {
        if (c == 0) return;
        printf "%-24s n=%-3d median=%s ms  worst=%s ms  probes median=%s max=%s\n", p, c, ms[int((c+1)/2)], ms[c], pr_sorted(), pmax
    }
    function pr_sorted(   i, j, t) {
        for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (pr[j] < pr[i]) { t = pr[i]; pr[i] = pr[j]; pr[j] = t }
        return pr[int((c+1)/2)]
    }
    $1 != p { report(); p = $1; c = 0; pmax = 0 }
    { c++; ms[c] = $2; pr[c] = $3; if ($3 > pmax) pmax = $3 }
    END { report() }'
echo "== typed failures"
grep -h '^FIGURE pair=.*failed' "$out"/*.log | sed -E 's/FIGURE pair=([^ ]+) side=([ab]) failed kind=(.*)/\1 \3/' | sort | uniq -c
echo "(logs in $out)"
