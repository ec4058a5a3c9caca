#!/usr/bin/env bash
# Measures the latency the gateway adds over calling the simulator directly, unary, at 1 and 16
# concurrent clients, and the throughput at which the gateway's p99 stays under 10 ms (exact cache
# and semantic cache off, so every request goes upstream; cost accounting and the file ledger on, as shipped); then
# exact-cache hits over gRPC at 16 clients on a second node with the cache in process, and on a
# third with the cache in Redis (a redis-server started here). Each case also reports the CPU time
# the server under test (the simulator for "direct", else the node) spent per request, a capacity
# figure less sensitive to the machine's noise than throughput. Floors beside each: the same
# requests to bare servers built from the node's stack with none of its pipeline
# (`switchyard-loadtest floor-http` forwarding to the simulator, `floor-grpc` answering a fixed
# response, from Redis in the Redis case), i.e. what the stack alone costs on this machine.
# Ramps: pass-through throughput with p99 under 10 ms, and Redis-backed exact hits with p99
# under 1 ms.
# Usage: loadtest/scripts/gateway-overhead.sh [SECONDS_PER_RUN] [RUNS]
# Prints each run's JSON line and, per case, the median of the runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-10}
runs=${2:-3}
bin=target/release
cargo build --release --locked -p switchyard-node -p switchyard-loadtest >&2

sim_port=19100
"$bin/switchyard-sim" --listen 127.0.0.1:$sim_port >/dev/null 2>&1 &
sim=$!
work=$(mktemp -d)
sed -e "s/127.0.0.1:9100/127.0.0.1:$sim_port/" \
    -e 's/grpc_listen = "127.0.0.1:50051"/grpc_listen = "127.0.0.1:19051"/' \
    -e 's/http_listen = "127.0.0.1:8080"/http_listen = "127.0.0.1:19080"/' \
    -e 's/log_level = "info"/log_level = "warn"/' \
    -e 's/^exact = true /exact = false /' \
    -e '/^\[semantic_cache\]/,/^enabled/s/^enabled = true /enabled = false /' \
    deploy/examples/single-node.toml >"$work/pass-through.toml"
sed -e "s/127.0.0.1:9100/127.0.0.1:$sim_port/" \
    -e 's/grpc_listen = "127.0.0.1:50051"/grpc_listen = "127.0.0.1:19052"/' \
    -e 's/http_listen = "127.0.0.1:8080"/http_listen = "127.0.0.1:19081"/' \
    -e 's/log_level = "info"/log_level = "warn"/' \
    -e '/^\[semantic_cache\]/,/^enabled/s/^enabled = true /enabled = false /' \
    deploy/examples/single-node.toml >"$work/cached.toml"
redis_port=16379
redis-server --port $redis_port --save "" --appendonly no >/dev/null 2>&1 &
redis=$!
sed -e 's/grpc_listen = "127.0.0.1:19052"/grpc_listen = "127.0.0.1:19053"/' \
    -e 's/http_listen = "127.0.0.1:19081"/http_listen = "127.0.0.1:19082"/' \
    -e "s|^url = \"\"|url = \"redis://127.0.0.1:$redis_port\"|" \
    "$work/cached.toml" >"$work/cached-redis.toml"
SWITCHYARD_TENANCY__LEDGER_PATH="$work/ledger-1.jsonl" "$bin/switchyard" serve --config "$work/pass-through.toml" >/dev/null 2>&1 &
node=$!
SWITCHYARD_TENANCY__LEDGER_PATH="$work/ledger-2.jsonl" "$bin/switchyard" serve --config "$work/cached.toml" >/dev/null 2>&1 &
cached=$!
SWITCHYARD_TENANCY__LEDGER_PATH="$work/ledger-3.jsonl" "$bin/switchyard" serve --config "$work/cached-redis.toml" >/dev/null 2>&1 &
cached_redis=$!
"$bin/switchyard-loadtest" floor-http --listen 127.0.0.1:19090 --upstream "http://127.0.0.1:$sim_port/v1" >/dev/null 2>&1 &
floor_http=$!
"$bin/switchyard-loadtest" floor-grpc --listen 127.0.0.1:19054 >/dev/null 2>&1 &
floor_grpc=$!
sleep 0.5 # redis-server up before floor-grpc --redis stores its answer
"$bin/switchyard-loadtest" floor-grpc --listen 127.0.0.1:19055 --redis "redis://127.0.0.1:$redis_port" >/dev/null 2>&1 &
floor_grpc_redis=$!
trap 'kill $sim $node $cached $cached_redis $redis $floor_http $floor_grpc $floor_grpc_redis 2>/dev/null; rm -rf "$work"' EXIT
sleep 1

results=$(mktemp)
# CPU time (user + system, clock ticks) a process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
bench() { # name target concurrency pid-of-the-server-under-test
  local out load before after
  out=$(mktemp)
  "$bin/switchyard-loadtest" bench --target "$2" --model gpt-4o-mini --concurrency "$3" \
    --duration "$seconds" --warmup 1 >"$out" &
  load=$!
  sleep 1 # the warm-up second: the server's CPU is counted over the measured seconds only
  before=$(cpu_ticks "$4")
  wait "$load"
  after=$(cpu_ticks "$4")
  python3 -c 'import json, sys
row = json.loads(sys.argv[1])
row["server_cpu_us_per_request"] = round((int(sys.argv[3]) - int(sys.argv[2])) * 1e6 / int(sys.argv[4]) / row["requests"], 1)
print(json.dumps(row))' "$(tail -n 1 "$out")" "$before" "$after" "$(getconf CLK_TCK)" | sed "s/^/$1 /" | tee -a "$results"
  rm -f "$out"
}
for run in $(seq "$runs"); do
  for concurrency in 1 16; do
    bench "direct-c$concurrency" "http://127.0.0.1:$sim_port" "$concurrency" "$sim"
    bench "floor-http-c$concurrency" "http://127.0.0.1:19090" "$concurrency" "$floor_http"
    bench "gateway-http-c$concurrency" "http://127.0.0.1:19080" "$concurrency" "$node"
    bench "gateway-grpc-c$concurrency" "grpc://127.0.0.1:19051" "$concurrency" "$node"
  done
  bench "floor-grpc-c16" "grpc://127.0.0.1:19054" 16 "$floor_grpc"
  bench "exact-hit-grpc-c16" "grpc://127.0.0.1:19052" 16 "$cached"
  bench "floor-grpc-redis-c16" "grpc://127.0.0.1:19055" 16 "$floor_grpc_redis"
  bench "exact-hit-redis-grpc-c16" "grpc://127.0.0.1:19053" 16 "$cached_redis"
done
ramp() { # name target levels p99-budget-us
  "$bin/switchyard-loadtest" ramp --target "$2" --model gpt-4o-mini \
    --duration "$seconds" --levels "$3" --p99-budget-us "$4" | tail -n 1 | sed "s/^/$1 /"
}
ramp ramp-gateway-http http://127.0.0.1:19080 1,2,4,8,16,32,64 10000
ramp ramp-gateway-grpc grpc://127.0.0.1:19051 1,2,4,8,16,32,64 10000
# The bare forwarder: the most a pass-through can do on this machine with the node's stack.
ramp ramp-floor-http http://127.0.0.1:19090 1,2,4,8,16,32,64 10000
# Exact-cache hits with Redis: the most clients at which p99 stays under 1 ms.
ramp ramp-exact-hit-redis-grpc grpc://127.0.0.1:19053 1,2,4,8,16 1000
ramp ramp-floor-grpc-redis grpc://127.0.0.1:19055 1,2,4,8,16 1000

echo
echo "median of $runs runs (microseconds, requests/s):"
python3 - "$results" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, payload = line.split(" ", 1)
    rows.setdefault(name, []).append(json.loads(payload))
print(f"{'case':24} {'p50_us':>8} {'p99_us':>8} {'rps':>9} {'cpu_us/req':>10}")
for name, items in rows.items():
    med = lambda key: statistics.median(item[key] for item in items)
    print(f"{name:24} {med('p50_us'):8.0f} {med('p99_us'):8.0f} {med('rps'):9.0f} {med('server_cpu_us_per_request'):10.1f}")
PY
rm -f "$results"
