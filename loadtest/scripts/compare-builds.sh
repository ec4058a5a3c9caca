#!/usr/bin/env bash
# Two builds of the node side by side on the pass-through path (both caches off), with the floor
# and the upstream alone: wrk (one thread) with distinct prompts, nginx returning a fixed
# completion as the upstream, every case once per round, rounds interleaved. Per case: p50 and
# p99 at 1 client, requests/s at 64 clients, and (perf stat on the server and nginx during the
# 64-client run) CPU time and context switches per request.
# Usage: loadtest/scripts/compare-builds.sh OLD_BINARY NEW_BINARY [SECONDS_PER_CASE] [ROUNDS]
# Needs wrk, nginx and perf (apt-get install wrk nginx-light linux-perf) and a release build of
# switchyard-loadtest (for floor-http).
set -euo pipefail
cd "$(dirname "$0")/../.."
old=$(realpath "$1")
new=$(realpath "$2")
seconds=${3:-10}
rounds=${4:-3}
for tool in wrk nginx perf; do
  command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install wrk nginx-light linux-perf" >&2; exit 1; }
done

work=$(mktemp -d)
upstream_port=19600
# shellcheck source=loadtest/scripts/neutral-upstream.sh
. loadtest/scripts/neutral-upstream.sh
start_nginx "$work" "$upstream_port"
node_config "$upstream_port" 19651 19681 "${CACHES_OFF[@]}" >"$work/old.toml"
node_config "$upstream_port" 19652 19682 "${CACHES_OFF[@]}" >"$work/new.toml"
SWITCHYARD_TENANCY__LEDGER_PATH="$work/ledger-old.jsonl" "$old" serve --config "$work/old.toml" >/dev/null 2>"$work/old.log" &
old_pid=$!
SWITCHYARD_TENANCY__LEDGER_PATH="$work/ledger-new.jsonl" "$new" serve --config "$work/new.toml" >/dev/null 2>"$work/new.log" &
new_pid=$!
target/release/switchyard-loadtest floor-http --listen 127.0.0.1:19690 --upstream "http://127.0.0.1:$upstream_port/v1" >/dev/null 2>&1 &
floor_pid=$!
trap 'kill $upstream $old_pid $new_pid $floor_pid 2>/dev/null; rm -rf "$work"' EXIT
wait_ready 19681 19682
distinct_prompts "$work/distinct.lua"
nginx_worker=$(pgrep -P "$upstream" | head -1)

results="$work/results"
for round in $(seq 1 "$rounds"); do
  echo "round $round" >&2
  for case in "upstream-direct $upstream_port $nginx_worker" "floor-http 19690 $floor_pid" "old 19681 $old_pid" "new 19682 $new_pid"; do
    read -r name port pid <<<"$case"
    url="http://127.0.0.1:$port/v1/chat/completions"
    one=$(wrk -t1 -c1 -d"${seconds}s" --latency -s "$work/distinct.lua" "$url")
    perf stat -e task-clock,context-switches -p "$pid" -o "$work/perf-server" -- sleep "$seconds" &
    server_perf=$!
    perf stat -e task-clock -p "$nginx_worker" -o "$work/perf-nginx" -- sleep "$seconds" &
    nginx_perf=$!
    many=$(wrk -t1 -c64 -d"${seconds}s" -s "$work/distinct.lua" "$url")
    wait "$server_perf" "$nginx_perf" || true
    p50=$(echo "$one" | awk '$1=="50%" {print $2}' | to_us)
    p99=$(echo "$one" | awk '$1=="99%" {print $2}' | to_us)
    rps=$(echo "$many" | awk '/^Requests\/sec/ {print $2}')
    requests=$(echo "$many" | awk '/requests in/ {print $1}')
    cpu_ms=$(awk '/task-clock/ {gsub(",","",$1); print $1}' "$work/perf-server")
    switches=$(awk '/context-switches/ {gsub(",","",$1); print $1}' "$work/perf-server")
    nginx_ms=$(awk '/task-clock/ {gsub(",","",$1); print $1}' "$work/perf-nginx")
    echo "$name $p50 $p99 $rps $(awk -v ms="$cpu_ms" -v n="$requests" 'BEGIN {print ms * 1000 / n}') $(awk -v s="$switches" -v n="$requests" 'BEGIN {print s / n}') $(awk -v ms="$nginx_ms" -v n="$requests" 'BEGIN {print ms * 1000 / n}')" | tee -a "$results" >&2
  done
done

python3 - "$results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, *values = line.split()
    rows.setdefault(name, []).append([float(v) for v in values])
med = {name: [statistics.median(v[i] for v in values) for i in range(6)] for name, values in rows.items()}
direct = med["upstream-direct"][0]
print("| target | 1 client p50 | added p50 | 1 client p99 | 64 clients req/s | × floor | server CPU / request | context switches / request | nginx CPU / request |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for name in ["upstream-direct", "floor-http", "old", "new"]:
    p50, p99, rps, cpu, switches, nginx = med[name]
    print(f"| {name} | {p50:.0f} µs | {p50 - direct:.0f} µs | {p99:.0f} µs | {rps:,.0f} | {rps / med['floor-http'][2]:.2f} | {cpu:.1f} µs | {switches:.2f} | {nginx:.1f} µs |")
PY
