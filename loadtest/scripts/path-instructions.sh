#!/usr/bin/env bash
# Instructions per request on the pass-through path, counted by callgrind: the node with both
# caches off against floor-http (the same HTTP stack with no pipeline), each forwarding to nginx
# returning a fixed completion, driven by wrk at one client with distinct prompts. Counts do not
# depend on what else the machine is doing, so two builds compare exactly (wall-clock throughput
# on a shared 2-core machine does not); the kernel's share of a request is not counted.
# Prints, for each server, requests served and instructions per request, then the node's
# heaviest inclusive functions of its own code.
# Usage: loadtest/scripts/path-instructions.sh [SECONDS] [NODE_BINARY]
# Needs wrk, nginx and valgrind (apt-get install wrk nginx-light valgrind).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-20}
node_bin=${2:-target/release/switchyard}
[ $# -ge 2 ] || cargo build --release --locked -p switchyard-node -p switchyard-loadtest >&2
for tool in wrk nginx valgrind callgrind_annotate callgrind_control; do
  command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install wrk nginx-light valgrind" >&2; exit 1; }
done

work=$(mktemp -d)
upstream_port=19500
# shellcheck source=loadtest/scripts/neutral-upstream.sh
. loadtest/scripts/neutral-upstream.sh
start_nginx "$work" "$upstream_port"
server=""
trap 'kill $upstream $server 2>/dev/null; rm -rf "$work"' EXIT
node_config "$upstream_port" 19551 19581 "${CACHES_OFF[@]}" >"$work/caches-off.toml"
cat >"$work/distinct.lua" <<'LUA'
local counter = 0
request = function()
  counter = counter + 1
  local body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Distinct question '
    .. counter .. ': which rail yard handles freight number ' .. (counter * 7919) .. '?"}]}'
  return wrk.format("POST", "/v1/chat/completions", {["Content-Type"] = "application/json"}, body)
end
LUA

measure() { # name port command…
  local name=$1 port=$2
  shift 2
  valgrind --tool=callgrind --callgrind-out-file="$work/$name.out" "$@" >/dev/null 2>"$work/$name.log" &
  server=$!
  for _ in $(seq 1 600); do
    curl -sf -o /dev/null -H 'content-type: application/json' -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"warm"}]}' \
      "http://127.0.0.1:$port/v1/chat/completions" && break
    sleep 0.2
  done
  callgrind_control -z "$server" >/dev/null 2>&1
  local requests
  requests=$(wrk -t1 -c1 -d"${seconds}s" -s "$work/distinct.lua" "http://127.0.0.1:$port/v1/chat/completions" | awk '/requests in/ {print $1}')
  callgrind_control -d "$server" >/dev/null 2>&1
  kill "$server"
  wait "$server" 2>/dev/null || true
  local total
  total=$(callgrind_annotate "$work/$name.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  echo "$name: $requests requests, $((total / requests)) instructions per request"
  echo "$name $requests $total" >>"$work/totals"
}

measure floor-http 19590 target/release/switchyard-loadtest floor-http --listen 127.0.0.1:19590 --upstream "http://127.0.0.1:$upstream_port/v1"
SWITCHYARD_TENANCY__LEDGER_PATH="$work/ledger.jsonl" measure node-caches-off 19581 "$node_bin" serve --config "$work/caches-off.toml"
awk '{per[$1] = $3 / $2} END {printf "node / floor: %.2fx the instructions per request\n", per["node-caches-off"] / per["floor-http"]}' "$work/totals"
echo
echo "node, heaviest functions of its own code (inclusive, instructions per request):"
requests=$(awk '$1 == "node-caches-off" {print $2}' "$work/totals")
callgrind_annotate --inclusive=yes "$work/node-caches-off.out.1" 2>/dev/null \
  | grep -E '(actors|node)/src/' | grep -v 'Instrumented' \
  | awk -v n="$requests" '{gsub(",", "", $1); name=$0; sub(/^[^ ]+ +\([^)]*\) +/, "", name); sub(/ \[.*$/, "", name); printf "%8d  %s\n", $1 / n, name}' \
  | head -40
