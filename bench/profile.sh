#!/usr/bin/env bash
# Where the gateway's CPU goes per request, by component, under S1's load: bench/profile.py run by bench/run.sh
# (the same mock upstream, pinning and clean-up) in place of its measurements.
#   bash bench/profile.sh bench/reference.yaml        (DURATION=15 CONNS=50 PROFILE_RATE=250 by default)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $# -ge 1 ]] || { echo "usage: bench/profile.sh CONFIG" >&2; exit 2; }
VENV=${VENV:-$ROOT/.venv}
[[ -x $VENV/bin/py-spy ]] || "$VENV/bin/python" -m pip install --quiet py-spy
GATEWAY_CONFIG=$1 MEASURE=bench/profile.py DURATION=${DURATION:-15} WARMUP=${WARMUP:-3} exec bash "$ROOT/bench/run.sh"
