#!/usr/bin/env bash
# Instructions per request of bench/micro_bar.py MODE (passthrough | direct | reference | policies), under callgrind,
# as bench/micro_route.sh counts them; `all` runs the four and prints each config's ratio to the passthrough,
# (passthrough - direct) / (config - direct). The callgrind files stay in $OUT (default /tmp/micro_bar).
set -euo pipefail
cd "$(dirname "$0")/.."
export SCRIPT=bench/micro_bar.py OUT=${OUT:-/tmp/micro_bar}
if [ "${1:-all}" != all ]; then exec bash bench/micro_route.sh "$1"; fi
declare -A count
for mode in direct passthrough reference policies; do
  line=$(bash bench/micro_route.sh "$mode")
  echo "$line"
  count[$mode]=$(awk '{print $2}' <<<"$line")
done
for mode in reference policies; do
  awk -v p="${count[passthrough]}" -v d="${count[direct]}" -v g="${count[$mode]}" -v m="$mode" \
    'BEGIN {printf "%s: %.3f x the passthrough (%d vs %d instructions a request, the harness %d subtracted)\n",
            m, (p - d) / (g - d), g - d, p - d, d}'
done
