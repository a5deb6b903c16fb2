#!/usr/bin/env bash
# Instructions per request of bench/micro_route.py MODE (full | route | full-mock | route-mock), or of $SCRIPT MODE
# (bench/micro_api.sh), under callgrind: two runs, N=1200 and N=200, their difference over 1000. The callgrind files
# stay in $OUT (default /tmp/micro_route) for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-full}
SCRIPT=${SCRIPT:-bench/micro_route.py}
# numpy's OpenBLAS threads spin while idle, for as long as the run lasts: one thread, none spinning.
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
# str hashes are salted per process: the collisions in the dicts a request reads, and so the count, moved by up to
# ~10,000 a request between runs of the same code. One seed makes a run repeatable; to compare two versions of the
# code, whose strings differ, run both under two or three seeds (PYTHONHASHSEED=1 ... bash bench/micro_route.sh).
export PYTHONHASHSEED=${PYTHONHASHSEED:-0}
OUT=${OUT:-/tmp/micro_route}
mkdir -p "$OUT"
# A run outside callgrind first: the sources changed since the last run are compiled (__pycache__) before either
# measured run, which would otherwise count their compilation.
.venv/bin/python "$SCRIPT" "$MODE" 1 >/dev/null
for n in 200 1200; do
  valgrind --tool=callgrind --callgrind-out-file="$OUT/$MODE.$n.out" .venv/bin/python "$SCRIPT" "$MODE" "$n" \
    >/dev/null 2>"$OUT/$MODE.$n.log"
done
low=$(awk '/^totals:/ {print $2}' "$OUT/$MODE.200.out")
high=$(awk '/^totals:/ {print $2}' "$OUT/$MODE.1200.out")
echo "$MODE: $(( (high - low) / 1000 )) instructions per request"
