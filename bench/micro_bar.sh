#!/usr/bin/env bash
# Instructions per request of bench/micro_bar.py MODE... (passthrough | direct | reference | policies | hit | off |
# miss), under callgrind, as bench/micro_route.sh counts them. With no MODE: reference, policies and hit. A run that names a
# gateway config (reference, policies, hit) counts direct and passthrough first, in the same run, and prints each
# config's ratio to the passthrough, (passthrough - direct) / (config - direct): issue 15's bars are 0.8 and 0.7
# (reference, policies), issue 18's 2 (hit). The callgrind files stay in $OUT (default /tmp/micro_bar).
set -euo pipefail
cd "$(dirname "$0")/.."
export SCRIPT=bench/micro_bar.py OUT=${OUT:-/tmp/micro_bar}
modes=("$@")
if [ ${#modes[@]} -eq 0 ]; then modes=(reference policies hit); fi
configs=()
for mode in "${modes[@]}"; do
  case $mode in
    direct | passthrough) ;;
    reference | policies | hit | full | off | miss) configs+=("$mode") ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
done
if [ ${#configs[@]} -gt 0 ]; then modes=(direct passthrough "${configs[@]}"); fi
declare -A count
for mode in "${modes[@]}"; do
  line=$(bash bench/micro_route.sh "$mode")
  echo "$line"
  count[$mode]=$(awk '{print $2}' <<<"$line")
done
for mode in "${configs[@]}"; do
  awk -v p="${count[passthrough]}" -v d="${count[direct]}" -v g="${count[$mode]}" -v m="$mode" \
    'BEGIN {printf "%s: %.3f x the passthrough (%d vs %d instructions a request, the harness %d subtracted)\n",
            m, (p - d) / (g - d), g - d, p - d, d}'
done
if [ -n "${count[off]:-}" ] && [ -n "${count[miss]:-}" ]; then  # issue 18's miss bar: at most 5 % fewer req/s
  awk -v o="${count[off]}" -v m="${count[miss]}" -v d="${count[direct]}" \
    'BEGIN {printf "miss: %.3f x off (%d vs %d instructions a request, the harness %d subtracted; bar: 1.053)\n",
            (m - d) / (o - d), m - d, o - d, d}'
fi
