#!/usr/bin/env bash
# The hot path's cost of the cluster's shared budgets and rate limits (BENCHMARKS.md, "Cluster,
# part 2"): pass-through requests (both caches off) at 1 and 16 clients against a lone node and
# against one node of a 3-node cluster, every request with an API key whose user has a daily
# budget and requests- and tokens-per-minute limits (all large enough never to refuse), RUNS
# rounds alternating the two. Also the lease asks and grants, the rate-limit asks and the health
# messages the cluster exchanged. (The keys are sk-alice and the admin's sk-admin, as in the tests.)
# Usage: loadtest/scripts/cluster-budgets.sh [SECONDS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-10}
runs=${2:-3}
bin=target/release
cargo build --release --locked -p switchyard-node -p switchyard-loadtest >&2

work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
sim_port=19300
"$bin/switchyard-sim" --listen 127.0.0.1:$sim_port >/dev/null 2>&1 &
pids+=($!)
echo cluster-bench >"$work/cookie"

# node N's config: HTTP on 1928N; N = 0 is the lone node, 1..3 the cluster on 127.0.0.(20+N).
node_config() {
  local n=$1 seeds=""
  sed -e "s/127.0.0.1:9100/127.0.0.1:$sim_port/" \
      -e "s/grpc_listen = \"127.0.0.1:50051\"/grpc_listen = \"127.0.0.1:1925$n\"/" \
      -e "s/http_listen = \"127.0.0.1:8080\"/http_listen = \"127.0.0.1:1928$n\"/" \
      -e 's/log_level = "info"/log_level = "warn"/' \
      -e 's/^exact = true /exact = false /' \
      -e '/^\[semantic_cache\]/,/^enabled/s/^enabled = true /enabled = false /' \
      deploy/examples/single-node.toml
  if [ "$n" -gt 0 ]; then
    for m in 1 2 3; do [ "$m" = "$n" ] || seeds="$seeds\"127.0.0.$((20 + m)):17600\", "; done
    printf '\n[cluster]\nnode_name = "node-%s"\nlisten = "127.0.0.%s:17600"\ncookie_file = "%s"\nseeds = [%s]\n' "$n" "$((20 + n))" "$work/cookie" "$seeds"
  fi
  printf '\n[tenancy]\nadmin_key_sha256 = "46db358cf47822ef17fa2cea371f2dd33512fb20ae94b092a5efb955d515b410"\n[[tenancy.keys]]\nid = "bench"\nkey_sha256 = "099295a3784e1bd368dc348843a7398c1931b6b8ec2504c73e91ed2040bdc46c"\ntenant = "acme"\nuser = "bench"\ndaily_budget_usd = 1000000\nrequests_per_minute = 6000000\ntokens_per_minute = 600000000\n'
}

node_pids=()
for n in 0 1 2 3; do
  node_config "$n" >"$work/node-$n.toml"
  SWITCHYARD_TENANCY__LEDGER_PATH="$work/ledger-$n.jsonl" "$bin/switchyard" serve --config "$work/node-$n.toml" >"$work/node-$n.log" 2>&1 &
  pids+=($!)
  node_pids+=($!)
done
# CPU time (user + system, clock ticks) a process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for n in 0 1 2 3; do
  until curl -sf "http://127.0.0.1:1928$n/ready" >/dev/null; do sleep 0.2; done
done
for n in 1 2 3; do
  until curl -sf -H 'authorization: Bearer sk-admin' "http://127.0.0.1:1928$n/admin/v1/cluster" | python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if sum(m['state']=='alive' for m in s['members'])==3 else 1)"; do sleep 0.2; done
done

counters() { # the cluster's lease and health counters, summed over its nodes
  for n in 1 2 3; do curl -s "http://127.0.0.1:1928$n/metrics"; done | python3 -c '
import re, sys
sums = {}
for line in sys.stdin:
    m = re.match(r"switchyard_(budget_lease_asks_total|budget_lease_grants_total|rate_limit_asks_total|cluster_health_messages_total)(\{[^}]*\})? ([0-9.e+]+)", line)
    if m:
        key = m.group(1) + (m.group(2) or "")
        sums[key] = sums.get(key, 0) + float(m.group(3))
print(" ".join(f"{k}={v:.0f}" for k, v in sorted(sums.items())))'
}

for run in $(seq 1 "$runs"); do
  for clients in 1 16; do
    for target in lone cluster; do
      port=19280; pid=${node_pids[0]}
      if [ "$target" = cluster ]; then port=19281; pid=${node_pids[1]}; fi
      before=$(counters)
      "$bin/switchyard-loadtest" --threads 1 bench --target "http://127.0.0.1:$port" --concurrency "$clients" --duration "$seconds" --api-key sk-alice >"$work/bench.json" &
      load=$!
      sleep 1 # the warm-up second: the node's CPU is counted over the measured seconds only
      ticks=$(cpu_ticks "$pid")
      wait "$load"
      row=$(tail -1 "$work/bench.json")
      cpu=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(round((int(sys.argv[3])-int(sys.argv[2]))*1e6/int(sys.argv[4])/r["requests"],1))' "$row" "$ticks" "$(cpu_ticks "$pid")" "$(getconf CLK_TCK)")
      echo "run $run $target $clients clients: $row node_cpu_us_per_request=$cpu"
      [ "$target" = cluster ] && echo "  counters before: $before" && echo "  counters after:  $(counters)"
    done
  done
done
