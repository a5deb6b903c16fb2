#!/usr/bin/env bash
# Instructions per request of bench/micro_api.py API (chat | responses | responses-stored), under callgrind: two
# runs, N=1200 and N=200, their difference over 1000. The callgrind files stay in $OUT (default /tmp/micro_api).
set -euo pipefail
cd "$(dirname "$0")/.."
API=${1:-chat}
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
OUT=${OUT:-/tmp/micro_api}
mkdir -p "$OUT"
.venv/bin/python bench/micro_api.py "$API" 1 >/dev/null  # compiles what changed outside the measured runs
for n in 200 1200; do
  valgrind --tool=callgrind --callgrind-out-file="$OUT/$API.$n.out" .venv/bin/python bench/micro_api.py "$API" "$n" \
    >/dev/null 2>"$OUT/$API.$n.log"
done
low=$(awk '/^totals:/ {print $2}' "$OUT/$API.200.out")
high=$(awk '/^totals:/ {print $2}' "$OUT/$API.1200.out")
echo "$API: $(( (high - low) / 1000 )) instructions per request"
