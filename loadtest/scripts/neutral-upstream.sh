# Shared by the scripts that measure the gateway against a neutral upstream (source it):
#   start_nginx DIR PORT    nginx from Debian's packages on 127.0.0.1:PORT, one worker, returning
#                           a fixed chat completion to every request; sets $upstream to its pid.
#   node_config UPSTREAM_PORT GRPC_PORT HTTP_PORT [sed arguments…]
#                           deploy/examples/single-node.toml pointed at that upstream, on those
#                           ports, logging warnings only, the semantic index in memory; extra sed
#                           arguments change it further (see CACHES_OFF).
#   wait_ready PORT…        waits (up to 30 s each) until the nodes on those HTTP ports are ready.
#   distinct_prompts FILE   a wrk script sending a distinct chat prompt every request (a counter
#                           and random numbers), so every request is a cache miss.
#   to_us                   a wrk latency figure ("850.00us", "1.20ms", "1.02s") in microseconds.
# shellcheck shell=bash

# sed arguments that turn both cache layers off.
CACHES_OFF=(-e 's/^exact = true /exact = false /' -e '/^\[semantic_cache\]/,/^enabled/s/^enabled = true /enabled = false /')

start_nginx() {
  local dir=$1 port=$2
  cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  server {
    listen 127.0.0.1:$port backlog=4096;
    keepalive_requests 1000000;
    location / {
      default_type application/json;
      return 200 '{"id":"chatcmpl-fixed","object":"chat.completion","created":0,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"A fixed answer from the neutral upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20}}';
    }
  }
}
CONF
  nginx -p "$dir" -c "$dir/nginx.conf" &
  upstream=$!
}

node_config() {
  local upstream_port=$1 grpc=$2 http=$3
  shift 3
  sed -e "s/127.0.0.1:9100/127.0.0.1:$upstream_port/" \
      -e "s/grpc_listen = \"127.0.0.1:50051\"/grpc_listen = \"127.0.0.1:$grpc\"/" \
      -e "s/http_listen = \"127.0.0.1:8080\"/http_listen = \"127.0.0.1:$http\"/" \
      -e 's/log_level = "info"/log_level = "warn"/' \
      -e "s|data_dir = \"data/semantic\"|data_dir = \"\"|" \
      "$@" deploy/examples/single-node.toml
}

wait_ready() {
  local port
  for port in "$@"; do
    for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.1; done
  done
}

distinct_prompts() {
  cat >"$1" <<'LUA'
local counter = 0
math.randomseed(os.time())
request = function()
  counter = counter + 1
  local body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Distinct question '
    .. counter .. '-' .. math.random(1, 2000000000) .. ': which rail yard handles freight number '
    .. math.random(1, 2000000000) .. '?"}]}'
  return wrk.format("POST", "/v1/chat/completions", {["Content-Type"] = "application/json"}, body)
end
LUA
}

to_us() {
  awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); print v+0} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v*1000} else {sub(/s$/,"",v); print v*1000000}}'
}
