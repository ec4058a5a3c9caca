#!/usr/bin/env bash
# The assignment's table (BENCHMARKS.md, "The assignment's table"): a workload built from the
# labelled pairs and real prompts in DATA_DIR, replayed RUNS times against a fresh node on the
# shipped defaults (exact and semantic layers on, the simulator as upstream), each run's hit
# ratios, semantic precision and percentiles by layer; then the node's cold start to /ready with
# the model loaded.
# Usage: loadtest/scripts/assignment-table.sh DATA_DIR [RUNS] [REQUESTS] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${1:?usage: assignment-table.sh DATA_DIR [RUNS] [REQUESTS] [CONCURRENCY]}
runs=${2:-3}
requests=${3:-3000}
concurrency=${4:-4}
bin=target/release
cargo build --release --locked -p switchyard-node -p switchyard-loadtest >&2
scripts/fetch-model >&2

work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
"$bin/switchyard-sim" --listen 127.0.0.1:9100 >/dev/null 2>&1 &
pids+=($!)

"$bin/switchyard-loadtest" build-workload --pairs "$data/qqp-dev.jsonl" --prompts "$data/sharegpt-prompts-dev.json" \
  --count "$requests" --repeat 0.3 --paraphrase 0.2 --seed 11 --out "$work/workload.jsonl"

for run in $(seq 1 "$runs"); do
  state="$work/run-$run"
  mkdir -p "$state"
  SWITCHYARD_SEMANTIC_CACHE__DATA_DIR="$state/semantic" SWITCHYARD_TENANCY__LEDGER_PATH="$state/ledger.jsonl" \
    SWITCHYARD_TELEMETRY__LOG_LEVEL=warn "$bin/switchyard" serve >"$state/node.log" 2>&1 &
  node=$!
  until "$bin/switchyard" health >/dev/null 2>&1; do sleep 0.05; done
  "$bin/switchyard-loadtest" run --target http://127.0.0.1:8080 --workload "$work/workload.jsonl" \
    --concurrency "$concurrency" --requests "$requests" --markdown "$work/run-$run.md" --svg "$work/run-$run.svg" | tail -1 | sed "s/^/run $run: /"
  kill -TERM "$node"; wait "$node" || true
done
cp "$work/run-1.svg" loadtest/scripts/../../target/assignment-latency.svg 2>/dev/null || true

cold="$work/cold"
mkdir -p "$cold"
SWITCHYARD_SEMANTIC_CACHE__DATA_DIR="$cold/semantic" SWITCHYARD_TENANCY__LEDGER_PATH="$cold/ledger.jsonl" \
  "$bin/switchyard-loadtest" cold-start --binary "$bin/switchyard" --config deploy/examples/single-node.toml --runs 5 | tail -1 | sed 's/^/cold start: /'
