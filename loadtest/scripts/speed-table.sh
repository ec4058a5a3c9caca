#!/usr/bin/env bash
# The speed table: what the gateway itself costs on the request path, measured with a neutral pair
# from Debian's packages, wrk (one thread) as the client and nginx returning a fixed completion as
# the upstream, so that neither a Rust client nor the simulator takes the CPU the gateway needs.
# Every prompt is distinct, so every request is a cache miss. Cases, each at 1 and 64 clients:
#   upstream direct       wrk -> nginx
#   floor-http            wrk -> switchyard-loadtest floor-http -> nginx (the node's HTTP stack, no pipeline)
#   node, caches off      wrk -> switchyard (exact and semantic cache off) -> nginx
#   node, as shipped      wrk -> switchyard (the example config: exact + semantic cache on) -> nginx
# Each round runs every case once; the table is the median over the rounds, with the ratios the
# targets are stated in (as shipped against caches off at 64 clients; added p50 at 1 client).
# After each as-shipped case the script waits for that node to finish embedding what it stored.
# The as-shipped node's semantic lookups by result (miss, timeout, shed) and stores are printed at
# the end, from its /metrics.
# Usage: loadtest/scripts/speed-table.sh [SECONDS_PER_CASE] [ROUNDS]
# Needs wrk and nginx (apt-get install wrk nginx-light) and the embedding model (scripts/fetch-model).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-10}
rounds=${2:-3}
bin=target/release
cargo build --release --locked -p switchyard-node -p switchyard-loadtest >&2
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "needs wrk and nginx: apt-get install wrk nginx-light" >&2; exit 1; }

work=$(mktemp -d)
upstream_port=19300
# shellcheck source=loadtest/scripts/neutral-upstream.sh
. loadtest/scripts/neutral-upstream.sh
start_nginx "$work" "$upstream_port"
node_config "$upstream_port" 19351 19381 "${CACHES_OFF[@]}" >"$work/caches-off.toml"
node_config "$upstream_port" 19352 19382 >"$work/as-shipped.toml"
SWITCHYARD_TENANCY__LEDGER_PATH="$work/ledger-1.jsonl" "$bin/switchyard" serve --config "$work/caches-off.toml" >/dev/null 2>"$work/caches-off.log" &
caches_off=$!
SWITCHYARD_TENANCY__LEDGER_PATH="$work/ledger-2.jsonl" "$bin/switchyard" serve --config "$work/as-shipped.toml" >/dev/null 2>"$work/as-shipped.log" &
as_shipped=$!
"$bin/switchyard-loadtest" floor-http --listen 127.0.0.1:19390 --upstream "http://127.0.0.1:$upstream_port/v1" >/dev/null 2>&1 &
floor=$!
trap 'kill $upstream $caches_off $as_shipped $floor 2>/dev/null; rm -rf "$work"' EXIT
wait_ready 19381 19382

# Distinct prompts: a per-connection counter and random numbers in every one.
distinct_prompts "$work/distinct.lua"

results="$work/results"
case_run() { # name url connections
  local out p50 p99 rps
  out=$(wrk -t1 -c"$3" -d"${seconds}s" --latency -s "$work/distinct.lua" "$2/v1/chat/completions")
  p50=$(echo "$out" | awk '$1=="50%" {print $2}' | to_us)
  p99=$(echo "$out" | awk '$1=="99%" {print $2}' | to_us)
  rps=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
  errors=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  echo "$1 c$3 $p50 $p99 $rps ${errors:-0}" | tee -a "$results" >&2
}
# Waits until the node on PORT has no answer left to embed for the semantic layer (its stores
# counter holds still for a second; at most 120 s), so its idle-priority embedder does not run
# into the next case.
quiesce() { # port
  local last="" now
  for _ in $(seq 1 120); do
    now=$(curl -s "http://127.0.0.1:$1/metrics" | awk '/^switchyard_semantic_stores_total/ {sum += $NF} END {print sum + 0}')
    [ "$now" = "$last" ] && return 0
    last=$now
    sleep 1
  done
}
for round in $(seq 1 "$rounds"); do
  echo "round $round" >&2
  for clients in 1 64; do
    case_run upstream-direct "http://127.0.0.1:$upstream_port" "$clients"
    case_run floor-http "http://127.0.0.1:19390" "$clients"
    case_run node-caches-off "http://127.0.0.1:19381" "$clients"
    case_run node-as-shipped "http://127.0.0.1:19382" "$clients"
    quiesce 19382
  done
done

python3 - "$results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, clients, p50, p99, rps, errors = line.split()
    rows.setdefault((name, clients), []).append((float(p50), float(p99), float(rps), int(errors)))
med = {key: tuple(statistics.median(v[i] for v in values) for i in range(3)) + (sum(v[3] for v in values),) for key, values in rows.items()}
print("| target | 1 client p50 | 1 client p99 | 64 clients req/s | 64 clients p99 | non-2xx |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for name in ["upstream-direct", "floor-http", "node-caches-off", "node-as-shipped"]:
    one, many = med[(name, "c1")], med[(name, "c64")]
    print(f"| {name} | {one[0]:.0f} µs | {one[1]:.0f} µs | {many[2]:,.0f} | {many[1]/1000:.2f} ms | {one[3] + many[3]} |")
off, shipped, direct = med[("node-caches-off", "c64")], med[("node-as-shipped", "c64")], med[("upstream-direct", "c1")]
print()
print(f"as shipped / caches off at 64 clients: throughput {shipped[2] / off[2]:.0%}, p99 {shipped[1] / off[1]:.2f}x")
print(f"added p50 at 1 client: as shipped {(med[('node-as-shipped', 'c1')][0] - direct[0]) / 1000:.2f} ms, "
      f"caches off {(med[('node-caches-off', 'c1')][0] - direct[0]) / 1000:.3f} ms, floor {(med[('floor-http', 'c1')][0] - direct[0]) / 1000:.3f} ms")
print(f"caches off / floor at 64 clients: throughput {off[2] / med[('floor-http', 'c64')][2]:.0%}")
EOF
echo
echo "as-shipped node, semantic layer:"
curl -s http://127.0.0.1:19382/metrics | grep -E '^switchyard_(cache_lookups_total\{layer="semantic"|semantic_stores_total|cache_entries\{layer="semantic")' || true
