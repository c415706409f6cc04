#!/usr/bin/env bash
# A three-node weim cluster on this machine, all on loopback: MariaDB (the
# shared store), a Redis and an etcd of the demo's own, and three nodes on
# 127.0.0.1:8081-8083. See docs/DEPLOY.md.
#
#   scripts/cluster-demo.sh          # start, print how to use it, run until Ctrl-C
#   scripts/cluster-demo.sh check    # start, check the cluster formed, stop
#
# Environment: NODE_PORT (first node port, 8081), REDIS_PORT (6390),
# ETCD_PORT (23800, and +1 for etcd's peer port), MYSQL_URL
# (mysql://root@127.0.0.1:3306/weim_demo), DEMO_DIR (a new temporary
# directory), CARGO_TARGET_DIR (where the weim binary is built).
#
# It starts MariaDB if nothing answers on 127.0.0.1:3306 (needs root), and
# stops only the processes it started itself, by their PIDs.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-run}
node_port=${NODE_PORT:-8081}
redis_port=${REDIS_PORT:-6390}
etcd_port=${ETCD_PORT:-23800}
mysql_url=${MYSQL_URL:-mysql://root@127.0.0.1:3306/weim_demo}
demo_dir=${DEMO_DIR:-$(mktemp -d /tmp/weim-demo.XXXXXX)}
target=${CARGO_TARGET_DIR:-target}
admin_token=demo-admin-token-0001

log() { printf '== %s\n' "$*"; }
die() { printf 'cluster-demo: %s\n' "$*" >&2; exit 1; }

for cmd in redis-server redis-cli etcd curl; do
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found (Debian: apt-get install redis-server etcd-server curl)"
done

pids=()
node_pids=()
cleanup() {
  set +e
  if [ ${#node_pids[@]} -gt 0 ]; then
    log "draining the nodes (SIGTERM)"
    kill -TERM "${node_pids[@]}" 2>/dev/null
    for pid in "${node_pids[@]}"; do
      for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null
    done
  fi
  if [ ${#pids[@]} -gt 0 ]; then
    log "stopping the demo's Redis and etcd"
    kill "${pids[@]}" 2>/dev/null
    wait "${pids[@]}" 2>/dev/null
  fi
  log "logs and data left in $demo_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the binary ---------------------------------------------------------------
bin="$target/release/weim"
if [ ! -x "$bin" ]; then
  log "building weim (cargo build --release)"
  cargo build --release -p weim
fi

# --- MariaDB (shared store) -------------------------------------------------
mkdir -p "$demo_dir"
if ! mariadb-admin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null 2>&1; then
  [ -x /usr/sbin/mariadbd ] || die "MariaDB is not running and not installed (apt-get install mariadb-server)"
  log "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 1 60); do
    mariadb-admin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null 2>&1 && break
    sleep 0.5
  done
fi
db=${mysql_url##*/}
db=${db%%\?*}
mariadb --protocol=tcp -h127.0.0.1 -uroot -e \
  "CREATE DATABASE IF NOT EXISTS \`$db\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci" \
  || die "cannot create database $db (is $mysql_url reachable as root?)"

# --- Redis and etcd of the demo -----------------------------------------------
log "starting Redis on 127.0.0.1:$redis_port"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  >"$demo_dir/redis.log" 2>&1 &
pids+=($!)
log "starting etcd on 127.0.0.1:$etcd_port"
etcd --name weim-demo --data-dir "$demo_dir/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
  --initial-cluster "weim-demo=http://127.0.0.1:$((etcd_port + 1))" \
  >"$demo_dir/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 60); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 \
    && curl -fs "http://127.0.0.1:$etcd_port/health" >/dev/null 2>&1 && break
  sleep 0.25
done
redis-cli -p "$redis_port" ping >/dev/null 2>&1 || die "Redis did not start (see $demo_dir/redis.log)"
curl -fs "http://127.0.0.1:$etcd_port/health" >/dev/null || die "etcd did not start (see $demo_dir/etcd.log)"

# --- three nodes --------------------------------------------------------------
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
: >"$demo_dir/empty.yml"
for i in 1 2 3; do
  port=$((node_port + i - 1))
  mkdir -p "$demo_dir/n$i"
  log "starting node n$i on 127.0.0.1:$port"
  env WEIM_HTTP_LISTEN="127.0.0.1:$port" \
    WEIM_HTTP_ADMIN_TOKEN="$admin_token" \
    WEIM_NODE_DATA_DIR="$demo_dir/n$i" \
    WEIM_NODE_REACTORS=1 WEIM_NODE_WORKERS=4 \
    WEIM_AUTH_JWT_SECRET="$secret" \
    WEIM_STORE_KIND=mysql WEIM_STORE_MYSQL_URL="$mysql_url" \
    WEIM_CLUSTER_ENABLED=true WEIM_CLUSTER_NODE_ID="n$i" \
    WEIM_CLUSTER_ADVERTISE="127.0.0.1:$port" \
    WEIM_CLUSTER_ETCD="http://127.0.0.1:$etcd_port" \
    WEIM_CLUSTER_REDIS="redis://127.0.0.1:$redis_port/" \
    WEIM_CLUSTER_LEASE_TTL=5s \
    WEIM_ATTACH_DIR="$demo_dir/files" WEIM_ATTACH_SHARED=true \
    "$bin" --config "$demo_dir/empty.yml" >"$demo_dir/n$i.out" 2>"$demo_dir/n$i.log" &
  node_pids+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 1 100); do
    grep -q "listening on" "$demo_dir/n$i.out" 2>/dev/null && break
    kill -0 "${node_pids[$((i - 1))]}" 2>/dev/null || die "node n$i exited (see $demo_dir/n$i.log)"
    sleep 0.1
  done
done

# The cluster formed when every node lists the three.
formed=""
for _ in $(seq 1 50); do
  formed=yes
  for i in 1 2 3; do
    n=$(curl -fs -H "Admin-Token: $admin_token" "http://127.0.0.1:$((node_port + i - 1))/cluster" \
      | grep -o '"id":"n[123]"' | wc -l)
    [ "$n" = 3 ] || formed=""
  done
  [ -n "$formed" ] && break
  sleep 0.2
done
[ -n "$formed" ] || die "the nodes did not all see each other (see $demo_dir/n*.log)"
log "cluster formed:"
curl -fs -H "Admin-Token: $admin_token" "http://127.0.0.1:$node_port/cluster"
echo

if [ "$mode" = check ]; then
  for i in 1 2 3; do
    curl -fs "http://127.0.0.1:$((node_port + i - 1))/healthz" | tail -1; echo
  done
  reply=$(curl -fs -H "Admin-Token: $admin_token" -d 'body=hello from the demo' \
    "http://127.0.0.1:$node_port/ws/sendToAll")
  log "sendToAll on n1: $reply"
  log "check passed"
  exit 0
fi

cat <<EOF

The three nodes: http://127.0.0.1:$node_port, :$((node_port + 1)), :$((node_port + 2))
(Admin-Token: $admin_token, logs in $demo_dir/n1.log …).

  # a user, registered through any node (the store is shared)
  curl -s -d 'username=alice01&password=Secret123' http://127.0.0.1:$node_port/api/v1/register
  # the peer table and each node's state
  curl -s -H 'Admin-Token: $admin_token' http://127.0.0.1:$node_port/cluster
  curl -s http://127.0.0.1:$((node_port + 1))/healthz
  curl -s http://127.0.0.1:$((node_port + 2))/metrics | grep -E '^weim_(cluster|etcd|redis|bus)'
  # a broadcast from node 2 reaches the WebSockets of all three
  curl -s -H 'Admin-Token: $admin_token' -d 'body=hi' http://127.0.0.1:$((node_port + 1))/ws/sendToAll
  # drain node 3 (it leaves the peer table at once)
  kill -TERM ${node_pids[2]}

Ctrl-C stops everything this script started.
EOF
wait "${node_pids[@]}" 2>/dev/null || true
