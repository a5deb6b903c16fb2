#!/usr/bin/env bash
# Instructions per request of bench/micro_api.py API (chat | responses | responses-stored), under callgrind, as
# bench/micro_route.sh counts them. The callgrind files stay in $OUT (default /tmp/micro_api).
SCRIPT=bench/micro_api.py OUT=${OUT:-/tmp/micro_api} exec bash "$(dirname "$0")/micro_route.sh" "${1:-chat}"
