# Shared by the scripts that measure the gateway against a neutral upstream (source it):
#   start_nginx DIR PORT    nginx from Debian's packages on 127.0.0.1:PORT, one worker, returning
#                           a fixed chat completion to every request; sets $upstream to its pid.
#   node_config UPSTREAM_PORT GRPC_PORT HTTP_PORT [sed arguments…]
#                           deploy/examples/single-node.toml pointed at that upstream, on those
#                           ports, logging warnings only, the semantic index in memory; extra sed
#                           arguments change it further (see CACHES_OFF).
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
