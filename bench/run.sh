#!/usr/bin/env bash
# The gateway's own benchmark: what the default pipeline costs on top of a direct call to a fast upstream.
#
#   bash bench/run.sh                       # or: make bench
#   DURATION=5 CONNS=100 bash bench/run.sh
#
# Sets itself up (apt-get: nginx, libnginx-mod-http-echo, wrk), starts a mock OpenAI upstream (nginx + echo,
# config generated into the run dir) on LOAD_CPU and the gateway (bench/gateway.bench.yaml) on GATEWAY_CPU,
# then bench/measure.py drives wrk and the first-token client from LOAD_CPU, prints a table and writes
# .bench/project-bench/results/<UTC timestamp>.json. Stops everything it started on exit. See bench/README.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

export DURATION=${DURATION:-10}          # seconds per measured load run
export WARMUP=${WARMUP:-2}               # seconds of unmeasured load before each gateway run
export CONNS=${CONNS:-50}                # wrk connections, throughput runs
export LOW_CONNS=${LOW_CONNS:-1}         # wrk connections, the added-latency run
export STREAM_N=${STREAM_N:-30}          # sequential streams per target, first-token test
export CHUNK_DELAY_MS=${CHUNK_DELAY_MS:-10}
export LOAD_CPU=${LOAD_CPU:-0}           # wrk, the first-token client and nginx
export GATEWAY_CPU=${GATEWAY_CPU:-1}
export BENCH_PORT_BASE=${BENCH_PORT_BASE:-18300}
export GATEWAY_PORT=${GATEWAY_PORT:-18380}
export BENCH_API_KEY=${BENCH_API_KEY:-sk-bench-0123456789abcdef}
export GATEWAY_CONFIG=${GATEWAY_CONFIG:-bench/gateway.bench.yaml}   # relative to the repository's root
export SCENARIOS=${SCENARIOS:-whole stream low first_token}
KEEP_RUNS=${KEEP_RUNS:-5}                # run dirs kept under .bench/project-bench/run (access logs are large)
VENV=${VENV:-$ROOT/.venv}
PY=$VENV/bin/python

log() { printf '%s\n' "$*" >&2; }
die() { log "bench: $*"; exit 2; }

# --- set-up -----------------------------------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null || missing+=(nginx)
[[ -e /usr/share/nginx/modules/ngx_http_echo_module.so ]] || missing+=(libnginx-mod-http-echo)
command -v wrk >/dev/null || missing+=(wrk)
command -v taskset >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
    log "installing ${missing[*]} (apt-get)"
    [[ $(id -u) == 0 ]] || die "need root to apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [[ ! -x $VENV/bin/gateway ]]; then
    log "setting up $VENV"
    [[ -x $PY ]] || python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet -e .
fi
(($(nproc) > 1)) || log "bench: only one CPU: the load generator and the gateway will share it"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in $((BENCH_PORT_BASE + 1)) $((BENCH_PORT_BASE + 2)) $((BENCH_PORT_BASE + 3)) $((BENCH_PORT_BASE + 9)) \
    "$GATEWAY_PORT"; do
    ! port_busy "$port" || die "port $port is in use (set BENCH_PORT_BASE / GATEWAY_PORT)"
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
BASE=$ROOT/.bench/project-bench
export BENCH_RUN_DIR=$BASE/run/$STAMP
export BENCH_RESULT_FILE=$BASE/results/$STAMP.json
mkdir -p "$BENCH_RUN_DIR" "$BASE/results"
# Keep the newest KEEP_RUNS run dirs (this one included).
mapfile -t old < <(ls -1d "$BASE"/run/*/ 2>/dev/null | sort | head -n -"$KEEP_RUNS")
((${#old[@]} == 0)) || rm -rf -- "${old[@]}"

# --- processes, and their clean-up ------------------------------------------------------------------------------
NGINX_PID=""
GATEWAY_PID=""
MEASURE_PID=""

alive() {  # alive PID: running, and not a zombie waiting to be reaped
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

stop() {  # stop PID NAME: SIGTERM, then SIGKILL after 10 s; only ever a PID this script started
    local pid=$1 name=$2 i
    [[ -n $pid ]] && alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        alive "$pid" || break
        sleep 0.05
    done
    if alive "$pid"; then
        log "bench: $name ($pid) did not stop after 10 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop "$MEASURE_PID" measure.py    # it stops the wrk it runs
    stop "$GATEWAY_PID" gateway
    stop "$NGINX_PID" nginx
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_port() {  # wait_port PORT PID NAME
    local i
    for ((i = 0; i < 100; i++)); do
        port_busy "$1" && return 0
        alive "$2" || die "$3 exited at start-up; see $BENCH_RUN_DIR"
        sleep 0.1
    done
    die "$3 does not listen on port $1 after 10 s; see $BENCH_RUN_DIR"
}

log "bench: run dir $BENCH_RUN_DIR"
"$PY" bench/upstream.py "$BENCH_RUN_DIR" --port-base "$BENCH_PORT_BASE" --cpu "$LOAD_CPU" \
    --chunk-delay-ms "$CHUNK_DELAY_MS" >/dev/null
nginx -t -q -p "$BENCH_RUN_DIR" -c "$BENCH_RUN_DIR/nginx.conf" -e "$BENCH_RUN_DIR/nginx-error.log" ||
    die "the generated nginx config is refused: $BENCH_RUN_DIR/nginx.conf"
taskset -c "$LOAD_CPU" nginx -p "$BENCH_RUN_DIR" -c "$BENCH_RUN_DIR/nginx.conf" -e "$BENCH_RUN_DIR/nginx-error.log" \
    >"$BENCH_RUN_DIR/nginx.out" 2>&1 &
NGINX_PID=$!
for offset in 1 2 3 9; do wait_port $((BENCH_PORT_BASE + offset)) "$NGINX_PID" nginx; done

export MOCK_BASE_URL=http://127.0.0.1:$((BENCH_PORT_BASE + 1))/v1
export MOCK_STREAM_BASE_URL=http://127.0.0.1:$((BENCH_PORT_BASE + 2))/v1
export MOCK_SLOW_STREAM_BASE_URL=http://127.0.0.1:$((BENCH_PORT_BASE + 3))/v1
"$VENV/bin/gateway" check --config "$GATEWAY_CONFIG" >"$BENCH_RUN_DIR/gateway-check.txt" 2>&1 ||
    die "$GATEWAY_CONFIG does not pass 'gateway check': $(cat "$BENCH_RUN_DIR/gateway-check.txt")"
# taskset execs the gateway: $! is the gateway's own PID, which measure.py reads /proc for.
taskset -c "$GATEWAY_CPU" "$VENV/bin/gateway" serve --config "$GATEWAY_CONFIG" \
    >"$BENCH_RUN_DIR/gateway.log" 2>&1 &
GATEWAY_PID=$!
wait_port "$GATEWAY_PORT" "$GATEWAY_PID" gateway

# --- measurements -----------------------------------------------------------------------------------------------
# In the background and waited for, so that a signal to this script is handled at once, not after the run.
BENCH_GATEWAY_PID=$GATEWAY_PID taskset -c "$LOAD_CPU" "$PY" "${MEASURE:-bench/measure.py}" &
MEASURE_PID=$!
rc=0
wait "$MEASURE_PID" || rc=$?
MEASURE_PID=""

# Stop the gateway here rather than in the trap, to see how it shuts down.
t0=$(date +%s%N)
stop "$GATEWAY_PID" gateway
GATEWAY_PID=""
log "gateway shutdown (SIGTERM to exit): $((($(date +%s%N) - t0) / 1000000)) ms"
errors=$(grep -cE 'Traceback|ERROR|CRITICAL' "$BENCH_RUN_DIR/gateway.log" || true)
if ((errors > 0)); then
    log "WARNING: the gateway logged $errors error line(s), first ones below; all in $BENCH_RUN_DIR/gateway.log"
    grep -nE 'Traceback|ERROR|CRITICAL' "$BENCH_RUN_DIR/gateway.log" | head -5 | cut -c1-300 >&2
fi
exit "$rc"
