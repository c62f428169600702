#!/usr/bin/env bash
# Prints the before/after table of issue 10 ("Stay up under attack"): the
# same attacks at the same rates (transport/examples/attack_probe.rs) against
# a listener built from REF and from the working tree. REF defaults to
# 5dc7e7c, the main commit issue 10's branch started from (main itself now
# holds the change).
#
#   scripts/attack-figures.sh [REF=5dc7e7c] [ATTACK...]
#
# ATTACK is any of silent, syn, slow, flood (default: all; about 70 s per
# side). The REF tree is exported with `git archive` into a temporary
# directory (no worktree is created); both builds share this repository's
# target directory. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
ref="${1:-5dc7e7c}"
shift || true
attacks=("$@")
here=$(pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

run() { # dir label
    (cd "$1" && cargo build -q -p transport --example attack_probe) >&2
    (cd "$1" && cargo run -q -p transport --example attack_probe -- "${attacks[@]}") |
        sed -n 's/^figure //p' > "$tmp/$2"
}

git archive "$ref" | tar -x -C "$tmp" --one-top-level=before
mkdir -p "$tmp/before/transport/examples"
cp transport/examples/attack_probe.rs "$tmp/before/transport/examples/"
echo "building and running $ref ..." >&2
run "$tmp/before" before.txt
echo "building and running the working tree ..." >&2
run "$here" after.txt

echo "| attack | before ($ref) | after |"
echo "|---|---|---|"
paste -d '\t' "$tmp/before.txt" "$tmp/after.txt" | while IFS=$'\t' read -r b a; do
    name="${b%%: *}"
    echo "| $name | ${b#*: } | ${a#*: } |"
done
