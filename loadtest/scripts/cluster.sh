#!/usr/bin/env bash
# The cluster's benchmarks (BENCHMARKS.md, "cluster"):
# 1. remote against local semantic shard lookups, and a handoff of a 10k-entry partition,
#    between two processes (actors/examples/cluster-bench), over plain TCP and then over
#    mutual TLS (certificates from deploy/cluster-certs.sh);
# 2. semantic-hit requests/s through 1, 2 and 3 release nodes on loopback addresses, the exact
#    layer off, one closed-loop load generator per node at CONCURRENCY, all at once; every
#    request after the first of each node is a semantic hit (one prompt, so one partition: with
#    three nodes and replication 2 one of them asks another node for every lookup).
# Usage: loadtest/scripts/cluster.sh [SECONDS] [CONCURRENCY_PER_NODE]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-10}
concurrency=${2:-8}
bin=target/release
cargo build --release --locked -p switchyard-node -p switchyard-loadtest >&2
cargo build --release --locked -p switchyard-actors --example cluster-bench >&2
scripts/fetch-model >&2

work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT

deploy/cluster-certs.sh "$work/tls" >&2
for transport in tcp tls; do
  echo "== remote and local shard lookups, handoff of 10k entries ($transport)"
  if [ "$transport" = tls ]; then export SWITCHYARD_BENCH_TLS_DIR="$work/tls"; fi
  "$bin/examples/cluster-bench" serve 127.0.0.2:17400 10000 >"$work/serve.log" 2>&1 &
  server=$!
  pids+=($server)
  until grep -q "ready on" "$work/serve.log"; do sleep 0.2; done
  "$bin/examples/cluster-bench" measure 127.0.0.3:17401 127.0.0.2:17400 5000 $server
  kill $server
  wait $server 2>/dev/null || true
  rm -f "$work/serve.log"
done
unset SWITCHYARD_BENCH_TLS_DIR

sim_port=19200
"$bin/switchyard-sim" --listen 127.0.0.1:$sim_port >/dev/null 2>&1 &
pids+=($!)
echo cluster-bench >"$work/cookie"

# node N's config: HTTP on 1918N, gRPC on 1915N, cluster on 127.0.0.(10+N):17500
node_config() {
  local n=$1 members=$2 seeds=""
  for m in $(seq 1 "$members"); do
    [ "$m" = "$n" ] || seeds="$seeds\"127.0.0.$((10 + m)):17500\", "
  done
  sed -e "s/127.0.0.1:9100/127.0.0.1:$sim_port/" \
      -e "s/grpc_listen = \"127.0.0.1:50051\"/grpc_listen = \"127.0.0.1:1915$n\"/" \
      -e "s/http_listen = \"127.0.0.1:8080\"/http_listen = \"127.0.0.1:1918$n\"/" \
      -e 's/log_level = "info"/log_level = "warn"/' \
      -e 's/^exact = true /exact = false /' \
      -e 's|^data_dir = "data/semantic"|data_dir = ""|' \
      deploy/examples/single-node.toml
  if [ "$members" -gt 1 ]; then
    printf '\n[cluster]\nnode_name = "node-%s"\nlisten = "127.0.0.%s:17500"\ncookie_file = "%s"\nseeds = [%s]\n' \
      "$n" "$((10 + n))" "$work/cookie" "$seeds"
  fi
}

for members in 1 2 3; do
  echo "== semantic hits through $members node(s), $concurrency clients each, ${seconds}s"
  nodes=()
  for n in $(seq 1 "$members"); do
    node_config "$n" "$members" >"$work/node-$n.toml"
    SWITCHYARD_TENANCY__LEDGER_PATH="$work/ledger-$members-$n.jsonl" "$bin/switchyard" serve --config "$work/node-$n.toml" >"$work/node-$members-$n.log" 2>&1 &
    nodes+=($!)
    pids+=($!)
  done
  for n in $(seq 1 "$members"); do
    until curl -sf "http://127.0.0.1:1918$n/ready" >/dev/null; do sleep 0.2; done
  done
  if [ "$members" -gt 1 ]; then
    for n in $(seq 1 "$members"); do
      until curl -sf "http://127.0.0.1:1918$n/admin/v1/cluster" | python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if sum(m['state']=='alive' for m in s['members'])==$members and not s['handoffs_in_progress'] else 1)"; do sleep 0.2; done
    done
  fi
  # The first request stores the answer; every later one is a semantic hit.
  curl -sf "http://127.0.0.1:19181/v1/chat/completions" -H 'content-type: application/json' \
    -d '{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"What is a railway switchyard used for?"}]}' >/dev/null
  sleep 0.5
  loaders=()
  for n in $(seq 1 "$members"); do
    "$bin/switchyard-loadtest" --threads 1 bench --target "http://127.0.0.1:1918$n" --concurrency "$concurrency" --duration "$seconds" >"$work/bench-$members-$n.json" &
    loaders+=($!)
  done
  wait "${loaders[@]}"
  for n in $(seq 1 "$members"); do
    echo "node-$n: $(tail -1 "$work/bench-$members-$n.json")"
    curl -s "http://127.0.0.1:1918$n/metrics" | grep -E '^switchyard_(cache_lookups_total\{layer="semantic"|cluster_remote_lookups_total)' || true
  done
  python3 - "$work" "$members" <<'PY'
import json, sys
work, members = sys.argv[1], int(sys.argv[2])
runs = [json.loads(open(f"{work}/bench-{members}-{n}.json").read().strip().splitlines()[-1]) for n in range(1, members + 1)]
print(f"total: {sum(r['rps'] for r in runs):.0f} req/s, {sum(r['errors'] for r in runs)} errors")
PY
  kill "${nodes[@]}"
  wait "${nodes[@]}" 2>/dev/null || true
done
