#!/usr/bin/env bash
# Load-balancer smoke test: two `ivr serve` instances on one PostgreSQL database behind
# Debian's nginx (with deploy/nginx/ivr.conf's proxy settings, minus TLS); whole calls
# through nginx, one instance killed with SIGKILL halfway (tests/support/lb_smoke.py).
#
#   tests/support/lb_smoke.sh IVR_BINARY [DATABASE_URL]
#
# DATABASE_URL (or IVR_SMOKE_DATABASE_URL) names an empty PostgreSQL database, e.g.
# postgres://root@127.0.0.1:5432/lbsmoke. IVR_SMOKE_CALLS sets the number of calls (20).
# Needs nginx, psql and python3 with `twilio` (tests/requirements.txt).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
usage="usage: $0 IVR_BINARY [DATABASE_URL]  (or IVR_SMOKE_DATABASE_URL)"
bin=${1:?$usage}
db=${2:-${IVR_SMOKE_DATABASE_URL:-}}
[ -n "$db" ] || { echo "$usage" >&2; exit 2; }
calls=${IVR_SMOKE_CALLS:-20}
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
[ -x "$bin" ] || { echo "lb-smoke: $bin is not an executable" >&2; exit 2; }
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx" ] || { echo "lb-smoke: nginx is missing (apt-get install nginx)" >&2; exit 2; }
command -v psql >/dev/null || { echo "lb-smoke: psql is missing" >&2; exit 2; }
python3 -c 'import twilio.request_validator' 2>/dev/null \
  || { echo "lb-smoke: python3 needs twilio: pip install -r tests/requirements.txt" >&2; exit 2; }

# The record checks count every row: the database must start empty.
tables=$(psql -X -At -v ON_ERROR_STOP=1 -d "$db" \
  -c "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
[ "$tables" = 0 ] || { echo "lb-smoke: the database is not empty ($tables tables)" >&2; exit 2; }

tmp=$(mktemp -d)
pids=()
cleanup() {
  local rc=$?
  set +e; trap '' PIPE  # nothing, not even a closed output (| head), stops the clean-up
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ]; then
    for log in "$tmp"/*.log; do
      [ -f "$log" ] && { echo "--- last lines of $(basename "$log")"; tail -n 20 "$log"; } >&2
    done
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Three free loopback ports, taken together so that they differ.
read -r port_a port_b port_lb < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
public=http://127.0.0.1:$port_lb
token=lb-smoke-auth-token-0123456789

# Guest Care open around the clock, so that every call ends in a transfer whatever the
# day and hour the test runs.
cat > "$tmp/ivr.toml" <<'EOF'
[hours.weekly]
monday = "00:00-24:00"
tuesday = "00:00-24:00"
wednesday = "00:00-24:00"
thursday = "00:00-24:00"
friday = "00:00-24:00"
saturday = "00:00-24:00"
sunday = "00:00-24:00"
EOF

start_instance() { # name port
  mkdir -p "$tmp/$1"
  # A clean environment: nothing of the caller's IVR_* or SMTP settings leaks in;
  # PG* variables (a password for the URL) do.
  local pg=()
  while IFS= read -r v; do pg+=("$v=${!v}"); done < <(compgen -e | grep '^PG' || true)
  (cd "$tmp/$1" && exec env -i PATH="$PATH" HOME="$tmp/$1" "${pg[@]}" \
    RUST_LOG=info,sqlx=warn \
    IVR_CONFIG="$tmp/ivr.toml" \
    IVR_DATABASE_URL="$db" \
    IVR_LISTEN="127.0.0.1:$2" \
    IVR_PUBLIC_URL="$public" \
    IVR_FLOWS_DIR="$repo/ivr_flows" \
    IVR_JOURNAL_PATH="$tmp/$1/ivr.journal" \
    TWILIO_AUTH_TOKEN="$token" \
    "$bin" serve) >"$tmp/ivr-$1.log" 2>&1 &
  pids+=($!)
  disown $!  # no "Killed" job notice for the instance the driver kills
}
start_instance a "$port_a"
pid_a=$!
start_instance b "$port_b"
pid_b=$!

# nginx as a foreground process with everything in the temp dir; the proxy settings are
# deploy/nginx/ivr.conf's (keep them in step).
mkdir -p "$tmp/nginx"
user_line=""
[ "$(id -u)" = 0 ] && user_line="user root;"
cat > "$tmp/nginx/nginx.conf" <<EOF
$user_line
daemon off;
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx-error.log info;
events { worker_connections 512; }
http {
    # upstream_addr lists every instance tried: "A, B" is a request retried on B.
    log_format lb '\$status "\$request" upstream=\$upstream_addr status=\$upstream_status';
    access_log $tmp/nginx-access.log lb;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;

    upstream ivr {
        server 127.0.0.1:$port_a max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$port_b max_fails=1 fail_timeout=10s;
        keepalive 32;
        keepalive_timeout 5s;
    }
    server {
        listen 127.0.0.1:$port_lb;
        client_max_body_size 64k;
        client_body_buffer_size 64k;
        client_header_timeout 10s;
        client_body_timeout 5s;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host \$host;
        proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto \$scheme;
        proxy_set_header X-Forwarded-Host \$host;
        proxy_connect_timeout 2s;
        proxy_read_timeout 12s;
        proxy_send_timeout 12s;
        proxy_next_upstream_tries 2;
        location /voice/ {
            proxy_next_upstream error timeout non_idempotent;
            proxy_pass http://ivr;
        }
        location / { return 404; }
    }
}
EOF
"$nginx" -q -t -p "$tmp/nginx/" -e "$tmp/nginx-error.log" -c "$tmp/nginx/nginx.conf"
"$nginx" -p "$tmp/nginx/" -e "$tmp/nginx-error.log" -c "$tmp/nginx/nginx.conf" \
  >"$tmp/nginx-stdout.log" 2>&1 &
pids+=($!)
disown $!
for _ in $(seq 50); do
  python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port_lb), 0.2)" \
    2>/dev/null && break
  sleep 0.1
done

# In the background, so that a signal to this script is handled at once (bash runs traps
# only between commands, and `wait` is one it interrupts).
python3 "$repo/tests/support/lb_smoke.py" \
  --base "$public" --token "$token" --database-url "$db" --calls "$calls" \
  --nginx-log "$tmp/nginx-access.log" \
  --instance "a=$pid_a=http://127.0.0.1:$port_a" \
  --instance "b=$pid_b=http://127.0.0.1:$port_b" &
driver=$!
pids=("$driver" "${pids[@]}")
wait "$driver"
