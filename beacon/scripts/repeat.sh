#!/usr/bin/env bash
# Runs the beacon crate's tests N times (default 20) and prints how many runs
# passed: the loopback/process/resource tests always, and the network-lab
# tests too when run as root with CRUST_LAB=1 (the discovery-time figure is
# left out: run it once with --nocapture to read it).
#
#   beacon/scripts/repeat.sh 20
#   CRUST_LAB=1 beacon/scripts/repeat.sh 20
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-20}"
cargo test -p beacon --no-run -q 2>/dev/null || cargo test -p beacon --no-run
pass=0 lab_pass=0
for i in $(seq 1 "$n"); do
    if cargo test -p beacon -q >/tmp/beacon-repeat-$$.log 2>&1; then
        pass=$((pass + 1))
    else
        echo "run $i: FAILED"; grep -E "panicked|FAILED" /tmp/beacon-repeat-$$.log | head -5
    fi
    if [ "${CRUST_LAB:-}" = 1 ]; then
        if cargo test -p beacon -q --test lab -- --ignored lab_ --skip lab_discovery \
            --test-threads=2 >/tmp/beacon-repeat-$$.log 2>&1; then
            lab_pass=$((lab_pass + 1))
        else
            echo "lab run $i: FAILED"; grep -E "panicked|FAILED" /tmp/beacon-repeat-$$.log | head -5
        fi
    fi
done
rm -f /tmp/beacon-repeat-$$.log
echo "beacon tests: $pass of $n runs passed"
if [ "${CRUST_LAB:-}" = 1 ]; then echo "beacon lab tests: $lab_pass of $n runs passed"; fi
