#!/usr/bin/env bash
# Does the lookup budget and shedding cost semantic hits? A workload built from the labelled pairs
# and real prompts in DATA_DIR (30 % repeats, 20 % paraphrases) is replayed open loop at RATE
# requests a second against two fresh nodes on the shipped defaults and the simulator: one as
# shipped (lookup_budget = "auto"), one that never sheds or cuts a lookup short
# (lookup_budget = "60s"). Each run prints the runner's JSON line (hit ratios by layer, semantic
# precision, percentiles by layer) and the node's semantic lookups by result. ROUNDS alternate
# the two nodes.
# Usage: loadtest/scripts/semantic-shedding.sh DATA_DIR [RATE] [REQUESTS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${1:?usage: semantic-shedding.sh DATA_DIR [RATE] [REQUESTS] [ROUNDS]}
rate=${2:-20}
requests=${3:-1200}
rounds=${4:-2}
bin=target/release
cargo build --release --locked -p switchyard-node -p switchyard-loadtest >&2
scripts/fetch-model >&2

work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
"$bin/switchyard-sim" --listen 127.0.0.1:9100 >/dev/null 2>&1 &
pids+=($!)
"$bin/switchyard-loadtest" build-workload --pairs "$data/qqp-dev.jsonl" --prompts "$data/sharegpt-prompts-dev.json" \
  --count "$requests" --repeat 0.3 --paraphrase 0.2 --seed 11 --out "$work/workload.jsonl" >&2

for round in $(seq 1 "$rounds"); do
  for budget in auto 60s; do
    state="$work/$round-$budget"
    mkdir -p "$state"
    SWITCHYARD_SEMANTIC_CACHE__DATA_DIR="$state/semantic" SWITCHYARD_TENANCY__LEDGER_PATH="$state/ledger.jsonl" \
      SWITCHYARD_SEMANTIC_CACHE__LOOKUP_BUDGET="$budget" SWITCHYARD_TELEMETRY__LOG_LEVEL=warn \
      "$bin/switchyard" serve >"$state/node.log" 2>&1 &
    node=$!
    until "$bin/switchyard" health >/dev/null 2>&1; do sleep 0.05; done
    line=$("$bin/switchyard-loadtest" run --target http://127.0.0.1:8080 --workload "$work/workload.jsonl" \
      --rate "$rate" --requests "$requests" | tail -1)
    lookups=$(curl -s http://127.0.0.1:8080/metrics | grep -E '^switchyard_cache_lookups_total\{layer="semantic"' \
      | sed -E 's/.*result="([a-z]+)"\} /\1=/' | tr '\n' ' ')
    echo "round $round budget=$budget: $lookups"
    echo "$line"
    kill -TERM "$node"; wait "$node" || true
  done
done
