#!/usr/bin/env bash
# A device call carries the working tree, 64 MiB in all with the paths it carries, and the tracked tree alone is
# larger (the bundled models are ~60 MiB). Neither the benchmark (its inputs are exported into
# benchmarks/gpu/inputs beforehand) nor the training on the box (packed jobs) reads them, the docs' images or the
# committed results, so before the device calls
#
#   bash benchmarks/gpu/park.sh park      # move those tracked files to $PARK (default /tmp/ddrf-park)
#   bash benchmarks/gpu/park.sh restore   # after the calls: put them back (`git status` is clean again)
#
# Both print the size of what would travel. Commit nothing while parked.
set -euo pipefail
cd "$(dirname "$0")/../.."
PARK=${PARK:-/tmp/ddrf-park}
case "${1:-}" in
    park)
        if [[ -e "$PARK" ]]; then echo "park.sh: $PARK exists (restore first)"; exit 2; fi
        git ls-files -z -- models 'docs/*.png' benchmarks/results | while IFS= read -r -d '' f; do
            mkdir -p "$PARK/$(dirname "$f")" && mv "$f" "$PARK/$f"
        done ;;
    restore)
        if [[ ! -d "$PARK" ]]; then echo "park.sh: nothing parked in $PARK"; exit 2; fi
        cp -a "$PARK/." . && rm -rf "$PARK" ;;
    *)
        echo "usage: bash benchmarks/gpu/park.sh park|restore"; exit 2 ;;
esac
# What travels: the tracked files present and the untracked ones git does not ignore.
bytes=$({ git ls-files -z; git ls-files -z --others --exclude-standard; } \
        | { xargs -0 -r stat -c %s 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}')
echo "park.sh: the working tree that travels is $((bytes / 1048576)) MiB (a call carries 64 MiB, carried paths included)"
