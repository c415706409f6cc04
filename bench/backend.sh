#!/usr/bin/env bash
# The operator's backend against one weim node (SQLite), on loopback:
#  1. CONNS users (1..CONNS) are connected by `weim-load idle` (held for
#     HOLD seconds);
#  2. the server API pushes a notice to all of them through `push/users`
#     in batches of BATCH user ids (curl, one call per batch, in turn) and
#     prints the time it took and the users reached (`data.online`), then,
#     once the load generator ends, the Cmd 40 frames its connections
#     received (each user must get exactly one);
#  3. the webhook throughput: every sign-in is a `user.online` event (and
#     every close a `user.offline`), posted to a small keep-alive HTTP
#     receiver (Python, answering 204); printed as events/s sustained from
#     the first event posted to the empty queue, from weim's own counters.
# The load comes from four 127.0.0.x addresses, so the node runs with
# limits.conns_per_ip and limits.max_unauthenticated off.
# Usage: CONNS=19000 BATCH=1000 bench/backend.sh
# Needs the release binaries (cargo build --release -p weim -p weim-loadgen).
# Stops only the processes it started, by PID.
set -euo pipefail

CONNS=${CONNS:-19000}
BATCH=${BATCH:-1000}
HOLD=${HOLD:-60}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WEIM=$TARGET_DIR/release/weim
LOAD=$TARGET_DIR/release/weim-load
[ -x "$WEIM" ] && [ -x "$LOAD" ] || { echo "build first: cargo build --release -p weim -p weim-loadgen" >&2; exit 1; }

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
HOOK_PORT=$(free_port)
KEY=bench-server-api-key-$RANDOM$RANDOM
SECRET=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
echo "$SECRET" >"$TMP/jwt_secret"
now() { date +%s.%N; }

# The webhook receiver: HTTP/1.1 keep-alive, 204 to everything.
python3 - "$HOOK_PORT" >"$TMP/receiver.log" 2>&1 <<'PY' &
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
http.server.HTTPServer.allow_reuse_address = True
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
PIDS+=($!)

: >"$TMP/empty.yml"
WEIM_HTTP_LISTEN=127.0.0.1:$PORT WEIM_NODE_DATA_DIR=$TMP WEIM_AUTH_JWT_SECRET=$SECRET \
WEIM_HTTP_SERVER_API_KEYS=$KEY WEIM_WEBHOOK_URL=http://127.0.0.1:$HOOK_PORT/events \
WEIM_WEBHOOK_SECRET=bench WEIM_WEBHOOK_EVENTS=user.online,user.offline \
WEIM_WEBHOOK_QUEUE=100000 \
WEIM_LIMITS_CONNS_PER_IP=0 WEIM_LIMITS_MAX_UNAUTHENTICATED=0 \
    "$WEIM" --config "$TMP/empty.yml" >"$TMP/weim.out" 2>"$TMP/weim.log" &
WEIM_PID=$!
PIDS+=($WEIM_PID)
for _ in $(seq 100); do grep -q "listening on" "$TMP/weim.out" && break; sleep 0.1; done
grep -q "listening on" "$TMP/weim.out" || { cat "$TMP/weim.log"; exit 1; }

# The users (weim refuses tokens of users that do not exist).
python3 - "$TMP/weim.db" "$CONNS" <<'PY'
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=30)
now = int(time.time())
with db:
    db.executemany("INSERT OR IGNORE INTO users (id, username, username_key, password_hash, nickname, created_at) "
                   "VALUES (?, ?, ?, '', ?, ?)",
                   [(u, f"bench{u}", f"bench{u}", f"bench{u}", now) for u in range(1, int(sys.argv[2]) + 1)])
PY

metric() { curl -s "127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

echo "== $CONNS connections (weim-load idle, held ${HOLD} s)"
t_conn=$(now)
timeout -k 5 $((HOLD + 120)) "$LOAD" idle --target "127.0.0.1:$PORT" --secret-file "$TMP/jwt_secret" \
    --conns "$CONNS" --settle "$HOLD" --timeout $((HOLD + 100)) --pid "$WEIM_PID" >"$TMP/load.out" 2>&1 &
LOAD_PID=$!
PIDS+=($LOAD_PID)
for _ in $(seq 600); do
    [ "$(metric weim_connections_authenticated)" = "$CONNS" ] && break
    sleep 0.1
done
echo "signed in: $(metric weim_connections_authenticated) after $(awk -v a="$t_conn" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}') s"
# The webhook drains what the sign-ins queued from here on.
tA=$(now); sA=$(metric weim_webhook_sent_total); depthA=$(metric weim_webhook_queue_depth)

echo "== push/users, $CONNS users in batches of $BATCH"
reached=0
t0=$(now)
for ((first = 1; first <= CONNS; first += BATCH)); do
    last=$((first + BATCH - 1 < CONNS ? first + BATCH - 1 : CONNS))
    uids=$(seq -s, "$first" "$last")
    answer=$(curl -s -X POST "127.0.0.1:$PORT/server/v1/push/users" -H "Api-Key: $KEY" \
        -H 'Content-Type: application/json' -d "{\"uids\":[$uids],\"body\":\"{\\\"kind\\\":\\\"bench\\\"}\"}")
    n=$(echo "$answer" | grep -o '"online":[0-9]*' | cut -d: -f2)
    [ -n "$n" ] || { echo "push/users failed: $answer" >&2; exit 1; }
    reached=$((reached + n))
done
t1=$(now)
awk -v a="$t0" -v b="$t1" -v r="$reached" -v c="$CONNS" -v k="$BATCH" \
    'BEGIN {printf "push/users: %d of %d users reached in %.3f s (%d calls of %d ids, %.1f ms per call)\n", r, c, b - a, (c + k - 1) / k, k, 1000 * (b - a) / ((c + k - 1) / k)}'

echo "== webhook: user.online events (queue depth $depthA once all were signed in)"
for _ in $(seq 1200); do
    [ "$(metric weim_webhook_queue_depth)" = 0 ] && break
    sleep 0.05
done
tB=$(now); sB=$(metric weim_webhook_sent_total)
awk -v a="$tA" -v b="$tB" -v s="$((sB - sA))" -v all="$sB" \
    'BEGIN {printf "webhook throughput: %d events posted in %.2f s while the queue drained = %.0f events/s sustained (%d posted in all)\n", s, b - a, s / (b - a), all}'
echo "dropped: $(curl -s "127.0.0.1:$PORT/metrics" | grep '^weim_webhook_dropped_total' | tr '\n' ' ')"
echo "retries: $(metric weim_webhook_retries_total)"

echo "== the clients' side (weim-load ends after ${HOLD} s)"
wait "$LOAD_PID" || true
received=$(grep -o '40 ×[0-9]*' "$TMP/load.out" | grep -o '[0-9]*$' || echo 0)
echo "Cmd 40 received by the clients: $received of $CONNS"
[ "$received" = "$CONNS" ] || { tail -30 "$TMP/load.out"; exit 1; }
