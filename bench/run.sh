#!/usr/bin/env bash
# weim benchmarks: builds weim, weim-load and the peer servers, runs every
# scenario against each server in turn (one server at a time, a fresh
# process per scenario, all on loopback), prints one table per scenario with
# the ratio weim : best peer and writes bench/results/<date>.json.
# Kills only the processes it started, by PID.
#
# usage: bench/run.sh [--pin]
#   --pin   every server on CPU 0, the load generator on CPU 1 (taskset);
#           weim then also runs with its default reactors, unpinned (and the
#           load generator unpinned), for a second table
# environment:
#   PEERS="weim tokio-ws tokio-ws-4k node-ws go-hub"   servers to measure
#   CONNS=10000        connections per scenario (at most 19000: a process may
#                      hold 20,000 open files here)
#   SCENARIOS="idle broadcast slow"   (also: chat group soak, weim only)
#   ROUNDS=20          broadcast rounds        BODY_BYTES=100   their body size
#   SLOW_PCT=1         slow readers, percent (the slow scenario runs twice:
#                      without slow readers, then with them)
#   SLOW_ROUNDS=60     SLOW_BODY_BYTES=65536   rounds and body size there:
#                      enough bytes to fill a slow reader's kernel buffers
#                      (about 2.8 MB here) and then weim's
#                      limits.max_pending_bytes (256 KiB)
#   chat and group run against weim only, once per store:
#   STORES="sqlite mariadb"   MariaDB through the mariadb CLI: a fresh
#                      database weim_bench_<pid>_<n> per run, dropped after it
#   MARIADB_HOST=127.0.0.1 MARIADB_PORT=3306 MARIADB_USER=root (no password)
#   PAIRS=1000 MESSAGES=50 WINDOW=1    chat: pairs of friends, messages per
#                      connection, unacknowledged messages per connection
#   MEMBERS=5000 GROUP_ROUNDS=200 INTERVAL_MS=10   group: members online,
#                      messages, one every INTERVAL_MS
#   CHAT_BODY_BYTES=100   body size of chat, group and soak messages
#   soak (weim only, once per store; TIMEOUT does not apply, the run is
#   bounded by SOAK_DURATION + SOAK_DRAIN + 120 s):
#   SOAK_CONNS=19000   connections (pairs of friends, an even number)
#   SOAK_RATE=500      messages per second   SOAK_CHURN=1   percent of the
#                      connections closed and reconnected per second
#   SOAK_DURATION=600  SOAK_WARMUP=60   seconds of traffic and churn, and the
#                      warm-up left out of the RSS comparison
#   SOAK_DRAIN=60      bound of the final reconnect and catch-up, seconds
#   SOAK_AWAY_MS=0     how long a closed connection stays away (0: at once)
#   TIMEOUT=150        bound of each load generator run, seconds
#   QUIET=80 QUIET_WAIT=300   before each run, wait up to QUIET_WAIT s for
#                      a second in which the CPUs are at least QUIET % idle
#                      (other work on the machine distorts every number)
#   UNPINNED=1    with --pin: the second, unpinned weim table (0 = off)
#   BENCH_LIMITS=1     weim runs with limits.conns_per_ip and
#                      limits.max_unauthenticated off (0): the load comes
#                      from a few 127.0.0.x addresses, up to 5000
#                      connections each; in the group scenario also
#                      limits.send_rate (one sender reaches MEMBERS
#                      recipients 100 times a second); every other limit
#                      (cmd_rate 200/s, cmd_burst 1000, send_rate 1000/s,
#                      send_burst 10000, flood_close 10s) at its default.
#                      0 = every limit at its default (also for a BENCH_WEIM
#                      older than these keys, which it would refuse)
#   BENCH_WEIM         measure this weim binary instead of the one built
#                      here (e.g. an earlier commit's, for before / after)
#   CARGO_TARGET_DIR   where cargo (and the Go peer) build (default ./target)
set -euo pipefail

die() {
    echo "bench/run.sh: $*" >&2
    exit 1
}

PIN=0
while [ $# -gt 0 ]; do
    case "$1" in
    --pin) PIN=1 ;;
    -h | --help)
        sed -n '2,59p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

PEERS=${PEERS:-weim tokio-ws tokio-ws-4k node-ws go-hub}
CONNS=${CONNS:-10000}
SCENARIOS=${SCENARIOS:-idle broadcast slow}
ROUNDS=${ROUNDS:-20}
BODY_BYTES=${BODY_BYTES:-100}
SLOW_PCT=${SLOW_PCT:-1}
SLOW_ROUNDS=${SLOW_ROUNDS:-60}
SLOW_BODY_BYTES=${SLOW_BODY_BYTES:-65536}
TIMEOUT=${TIMEOUT:-150}
QUIET=${QUIET:-80}
QUIET_WAIT=${QUIET_WAIT:-300}
UNPINNED=${UNPINNED:-1}
BENCH_LIMITS=${BENCH_LIMITS:-1}
STORES=${STORES:-sqlite mariadb}
MARIADB_HOST=${MARIADB_HOST:-127.0.0.1}
MARIADB_PORT=${MARIADB_PORT:-3306}
MARIADB_USER=${MARIADB_USER:-root}
PAIRS=${PAIRS:-1000}
MESSAGES=${MESSAGES:-50}
WINDOW=${WINDOW:-1}
MEMBERS=${MEMBERS:-5000}
GROUP_ROUNDS=${GROUP_ROUNDS:-200}
INTERVAL_MS=${INTERVAL_MS:-10}
CHAT_BODY_BYTES=${CHAT_BODY_BYTES:-100}
SOAK_CONNS=${SOAK_CONNS:-19000}
SOAK_RATE=${SOAK_RATE:-500}
SOAK_CHURN=${SOAK_CHURN:-1}
SOAK_DURATION=${SOAK_DURATION:-600}
SOAK_WARMUP=${SOAK_WARMUP:-60}
SOAK_DRAIN=${SOAK_DRAIN:-60}
SOAK_AWAY_MS=${SOAK_AWAY_MS:-0}

num() { [[ "$2" =~ ^[0-9]+$ ]] || die "$1 must be a number"; }
num CONNS "$CONNS"
num ROUNDS "$ROUNDS"
num SLOW_ROUNDS "$SLOW_ROUNDS"
num BODY_BYTES "$BODY_BYTES"
num SLOW_BODY_BYTES "$SLOW_BODY_BYTES"
num TIMEOUT "$TIMEOUT"
num QUIET "$QUIET"
num QUIET_WAIT "$QUIET_WAIT"
for v in PAIRS MESSAGES WINDOW MEMBERS GROUP_ROUNDS INTERVAL_MS CHAT_BODY_BYTES MARIADB_PORT \
    SOAK_CONNS SOAK_RATE SOAK_DURATION SOAK_WARMUP SOAK_DRAIN SOAK_AWAY_MS; do
    num "$v" "${!v}"
done
[[ "$SOAK_CHURN" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "SOAK_CHURN must be a number (percent per second)"
[ "$SOAK_CONNS" -ge 2 ] && [ "$SOAK_CONNS" -le 19000 ] && [ $((SOAK_CONNS % 2)) = 0 ] ||
    die "SOAK_CONNS must be an even number in 2..19000"
[ "$SOAK_WARMUP" -lt "$SOAK_DURATION" ] || die "SOAK_WARMUP must be shorter than SOAK_DURATION"
SOAK_TIMEOUT=$((SOAK_DURATION + SOAK_DRAIN + 120))
[ "$PAIRS" -ge 1 ] && [ $((2 * PAIRS)) -le 19000 ] || die "PAIRS must be 1..9500 (2 connections each)"
[ "$MEMBERS" -ge 2 ] && [ "$MEMBERS" -le 19000 ] || die "MEMBERS must be 2..19000"
[ "$MESSAGES" -ge 1 ] && [ "$GROUP_ROUNDS" -ge 1 ] && [ "$WINDOW" -ge 1 ] ||
    die "MESSAGES, GROUP_ROUNDS and WINDOW must be positive"
for st in $STORES; do
    case "$st" in sqlite | mariadb) ;; *) die "unknown store: $st (sqlite, mariadb)" ;; esac
done
[[ "$MARIADB_USER" =~ ^[A-Za-z0-9_]+$ ]] || die "MARIADB_USER: letters, digits and _"
[[ "$MARIADB_HOST" =~ ^127\.[0-9.]+$|^localhost$ ]] || die "MARIADB_HOST must be on loopback"
[ "$CONNS" -ge 1 ] && [ "$CONNS" -le 19000 ] ||
    die "CONNS must be 1..19000 (a process may hold 20,000 open files here)"
[ "$ROUNDS" -ge 1 ] && [ "$SLOW_ROUNDS" -ge 1 ] || die "ROUNDS and SLOW_ROUNDS must be positive"
PEER_SCENARIOS=
CHAT_SCENARIOS=
for s in $SCENARIOS; do
    case "$s" in
    idle | broadcast | slow) PEER_SCENARIOS+="$s " ;;
    chat | group | soak) CHAT_SCENARIOS+="$s " ;;
    *) die "unknown scenario: $s" ;;
    esac
done
for p in $PEERS; do
    case "$p" in weim | tokio-ws | tokio-ws-4k | node-ws | go-hub) ;; *) die "unknown server: $p" ;; esac
done
if [ -z "$PEER_SCENARIOS" ] && [ "$PEERS" != weim ]; then
    # The peers speak only sign-in and sendToAll: no chat to measure.
    [[ " $PEERS " == *" weim "* ]] || die "chat, group and soak run against weim only: PEERS must include weim"
    echo "== chat, group and soak run against weim only; not building the peers"
    PEERS=weim
fi
if [ "$PIN" = 1 ]; then
    command -v taskset >/dev/null || die "--pin needs taskset (util-linux)"
    [ "$(nproc --all)" -ge 2 ] || die "--pin needs two CPUs"
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PEER_DIR=$TARGET_DIR/peers
mkdir -p "$PEER_DIR"

# --- build ----------------------------------------------------------------
declare -A SKIP=()
apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq || return 1
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

echo "== building weim and weim-load (release)"
cargo build --release -p weim -p weim-loadgen
WEIM=${BENCH_WEIM:-$TARGET_DIR/release/weim}
if [ "$BENCH_LIMITS" = 1 ]; then
    LIMITS_NOTE="limits.conns_per_ip 0, limits.max_unauthenticated 0 (group runs: limits.send_rate 0 too); the other limits at their defaults"
else
    LIMITS_NOTE="every limit at its default"
fi
echo "== weim: $WEIM; $LIMITS_NOTE"
LOAD=$TARGET_DIR/release/weim-load
[ -x "$WEIM" ] && [ -x "$LOAD" ] || die "binaries not found in $TARGET_DIR/release"

TOKIO_WS=$TARGET_DIR/release/peer-tokio-ws
GO_HUB=$PEER_DIR/go-hub
NODE_WS=$ROOT/bench/peers/node-ws
for p in $PEERS; do
    case "$p" in
    tokio-ws | tokio-ws-4k)
        [ -n "${SKIP[tokio-ws]+x}" ] && { SKIP[$p]=${SKIP[tokio-ws]}; continue; }
        [ "${built_tokio:-0}" = 1 ] && continue
        echo "== building the tokio-tungstenite peer (release)"
        # Built on its own so that its features (tokio's mio) do not change weim's build.
        if cargo build --release -p weim-peer-tokio-ws && [ -x "$TOKIO_WS" ]; then
            built_tokio=1
        else
            SKIP[$p]="cargo build -p weim-peer-tokio-ws failed"
        fi
        ;;
    node-ws)
        echo "== installing the ws package (npm ci)"
        if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
            apt_install nodejs npm || true
        fi
        if ! command -v node >/dev/null; then
            SKIP[$p]="Node.js is not installed and apt-get install nodejs failed"
        elif ! (cd "$NODE_WS" && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
            SKIP[$p]="npm ci in bench/peers/node-ws failed"
        fi
        ;;
    go-hub)
        echo "== building the gorilla/websocket hub (GOPATH mode)"
        if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/gorilla/websocket ]; then
            apt_install golang-go golang-github-gorilla-websocket-dev || true
        fi
        if ! command -v go >/dev/null; then
            SKIP[$p]="Go is not installed and apt-get install golang-go failed"
        elif ! (cd bench/peers/go-hub && GO111MODULE=off GOPATH=/usr/share/gocode \
            GOCACHE="$PEER_DIR/go-cache" go build -o "$GO_HUB" .); then
            SKIP[$p]="go build in bench/peers/go-hub failed"
        fi
        ;;
    esac
done
for p in "${!SKIP[@]}"; do echo "== skipping $p: ${SKIP[$p]}"; done

# Stores for chat and group: MariaDB must answer on loopback.
declare -A SKIP_STORE=()
mariadb_cli() {
    mariadb --protocol=tcp -h "$MARIADB_HOST" -P "$MARIADB_PORT" -u "$MARIADB_USER" --batch "$@"
}
RUN_STORES=()
MARIADB_VERSION=
MARIADB_PID=
if [ -n "$CHAT_SCENARIOS" ]; then
    for st in $STORES; do
        if [ "$st" = mariadb ]; then
            if ! command -v mariadb >/dev/null; then
                SKIP_STORE[mariadb]="the mariadb client is not installed"
            elif ! mariadb_cli -e 'SELECT 1' >/dev/null 2>&1; then
                SKIP_STORE[mariadb]="no MariaDB answering as $MARIADB_USER@$MARIADB_HOST:$MARIADB_PORT"
            fi
        fi
        if [ "$st" = sqlite ] && ! python3 -c 'import sqlite3' 2>/dev/null; then
            SKIP_STORE[sqlite]="python3 with sqlite3 is needed to insert the users and friendships"
        fi
        if [ "$st" = mariadb ] && [ -z "${SKIP_STORE[$st]+x}" ]; then
            MARIADB_VERSION=$(mariadb_cli -N -e 'SELECT VERSION()' 2>/dev/null || true)
            # Its CPU time is read from /proc (never signalled): it runs unpinned.
            MARIADB_PID=$(pgrep -xo mariadbd || pgrep -xo mysqld || true)
        fi
        if [ -n "${SKIP_STORE[$st]+x}" ]; then
            echo "== skipping chat and group on $st: ${SKIP_STORE[$st]}"
        else
            RUN_STORES+=("$st")
        fi
    done
fi

# --- servers --------------------------------------------------------------
TMP=$(mktemp -d /tmp/weim-bench.XXXXXX)
SERVER_PID=
LOAD_PID=
DB=
DB_SEQ=0
drop_db() {
    if [ -n "$DB" ]; then
        mariadb_cli -e "DROP DATABASE IF EXISTS \`$DB\`" >/dev/null 2>&1 ||
            echo "   (could not drop database $DB)"
        DB=
    fi
}
stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
    [ -n "$SERVER_PID" ] && wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}
cleanup() {
    if [ -n "$LOAD_PID" ] && kill -0 "$LOAD_PID" 2>/dev/null; then
        kill "$LOAD_PID" 2>/dev/null || true
        wait "$LOAD_PID" 2>/dev/null || true
    fi
    stop_server
    drop_db
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

printf '{}\n' >"$TMP/empty.yml"
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
# Admin-Token of every server (weim requires at least 16 characters).
ADMIN=bench-admin-token
(umask 077 && printf '%s' "$SECRET" >"$TMP/jwt_secret.bench")

free_port() {
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 10000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    die "no free port found"
}

# weim's limits that differ from their defaults in a run labelled $1 (see
# BENCH_LIMITS), as WEIM_* assignments.
weim_limits() {
    [ "$BENCH_LIMITS" = 1 ] || return 0
    echo WEIM_LIMITS_CONNS_PER_IP=0 WEIM_LIMITS_MAX_UNAUTHENTICATED=0
    case "$1" in group-*) echo WEIM_LIMITS_SEND_RATE=0 ;; esac
}

# start_server NAME PINNED LOG [STORE [LABEL]]: sets SERVER_PID and LISTEN
# (and DATA, weim's data directory; DB, a fresh MariaDB database for STORE
# mariadb).
start_server() {
    local name=$1 pinned=$2 log=$3 store=${4:-sqlite} label=${5:-} port
    port=$(free_port)
    local envs=(JWT_SECRET="$SECRET" ADMIN_TOKEN="$ADMIN") prog=()
    case "$name" in
    weim | weim-unpinned)
        DATA=$(mktemp -d "$TMP/weim-data.XXXXXX")
        envs=(WEIM_HTTP_LISTEN="127.0.0.1:$port" WEIM_NODE_DATA_DIR="$DATA"
            WEIM_HTTP_ADMIN_TOKEN="$ADMIN" WEIM_AUTH_JWT_SECRET="$SECRET" WEIM_LIMITS_CONNS_PER_USER=8)
        # shellcheck disable=SC2207 # plain NAME=value words
        envs+=($(weim_limits "$label"))
        if [ "$store" = mariadb ]; then
            DB_SEQ=$((DB_SEQ + 1))
            DB=weim_bench_$$_$DB_SEQ
            mariadb_cli -e "CREATE DATABASE \`$DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci" ||
                { DB= && return 1; }
            envs+=(WEIM_STORE_KIND=mysql
                WEIM_STORE_MYSQL_URL="mysql://$MARIADB_USER@$MARIADB_HOST:$MARIADB_PORT/$DB")
        fi
        prog=("$WEIM" --config "$TMP/empty.yml")
        ;;
    tokio-ws) prog=("$TOKIO_WS" "127.0.0.1:$port") ;;
    tokio-ws-4k) prog=("$TOKIO_WS" "127.0.0.1:$port" --read-buffer 4096) ;;
    node-ws) prog=(node "$NODE_WS/server.js" "127.0.0.1:$port") ;;
    go-hub) prog=("$GO_HUB" "127.0.0.1:$port") ;;
    esac
    [ "$pinned" = 1 ] && prog=(taskset -c 0 "${prog[@]}")
    # env and taskset exec the server, so $! is the server's own pid.
    env "${envs[@]}" "${prog[@]}" >"$log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 300); do
        grep -qE 'listening on 127\.[0-9.]+:[0-9]+' "$log" 2>/dev/null && break
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            tail -n 20 "$log" >&2
            SERVER_PID=
            return 1
        fi
        sleep 0.1
    done
    LISTEN=$(sed -n 's/.*listening on \(127\.[0-9.]*:[0-9]*\).*/\1/p' "$log" | head -n 1)
    if [ -z "$LISTEN" ]; then
        tail -n 20 "$log" >&2
        stop_server
        return 1
    fi
}

# setup_store SCENARIO STORE USERS: the users 1..USERS (weim refuses tokens
# of users that do not exist; the tokens themselves are minted) and the
# friendships (chat: users 1+2k and 2+2k for k < PAIRS, soak: for
# k < SOAK_CONNS / 2, both directions) or the group (id 1, owner user 1,
# members 1..MEMBERS) straight into the running node's store, which
# created its schema on start. weim reads them from the store on every
# send.
setup_store() {
    local scenario=$1 store=$2 users=$3 now pairs=$PAIRS
    [ "$scenario" = soak ] && pairs=$((SOAK_CONNS / 2)) scenario=chat
    now=$(($(date +%s) * 1000))
    if [ "$store" = sqlite ]; then
        python3 - "$DATA/weim.db" "$scenario" "$pairs" "$MEMBERS" "$now" "$users" <<'PY'
import sqlite3, sys
path, scenario, pairs, members, now, users = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
db = sqlite3.connect(path, timeout=30)  # WAL: the node keeps running
with db:
    db.executemany("INSERT OR IGNORE INTO users (id, username, username_key, password_hash, nickname, created_at) "
                   "VALUES (?, ?, ?, '', ?, ?)",
                   [(u, f"bench{u}", f"bench{u}", f"bench{u}", now // 1000) for u in range(1, users + 1)])
    if scenario == "chat":
        rows = []
        for k in range(pairs):
            a, b = 1 + 2 * k, 2 + 2 * k
            rows += [(a, b, now), (b, a, now)]
        db.executemany("INSERT INTO friends (user_id, friend_id, created_at) VALUES (?, ?, ?)", rows)
    elif scenario == "group":
        db.execute("INSERT INTO chat_groups (id, owner_id, name, name_key, created_at) "
                   "VALUES (1, 1, 'bench', 'bench', ?)", (now,))
        db.executemany("INSERT INTO group_members (group_id, user_id, joined_at) VALUES (1, ?, ?)",
                       [(u, now) for u in range(1, members + 1)])
db.close()
PY
    else
        # One statement of plain VALUES rows per table (10,000 friendship
        # rows are about 300 KB, far below max_allowed_packet).
        {
        awk -v n="$users" -v now="$((now / 1000))" -v q="'" 'BEGIN {
            printf "INSERT IGNORE INTO users (id, username, username_key, password_hash, nickname, created_at) VALUES "
            for (u = 1; u <= n; u++)
                printf "%s(%d,%sbench%d%s,%sbench%d%s,%s%s,%sbench%d%s,%d)", (u > 1 ? "," : ""), u, q, u, q, q, u, q, q, q, q, u, q, now
            print ";"
        }'
        if [ "$scenario" = chat ]; then
            awk -v p="$pairs" -v now="$now" 'BEGIN {
                printf "INSERT INTO friends (user_id, friend_id, created_at) VALUES "
                for (k = 0; k < p; k++)
                    printf "%s(%d,%d,%d),(%d,%d,%d)", (k ? "," : ""), 1 + 2 * k, 2 + 2 * k, now, 2 + 2 * k, 1 + 2 * k, now
                print ";"
            }'
        elif [ "$scenario" = group ]; then
            awk -v m="$MEMBERS" -v now="$now" -v q="'" 'BEGIN {
                printf "INSERT INTO chat_groups (id, owner_id, name, name_key, created_at) "
                printf "VALUES (1, 1, %sbench%s, %sbench%s, %d);\n", q, q, q, q, now
                printf "INSERT INTO group_members (group_id, user_id, joined_at) VALUES "
                for (u = 1; u <= m; u++) printf "%s(1,%d,%d)", (u > 1 ? "," : ""), u, now
                print ";"
            }'
        fi
        } | mariadb_cli "$DB"
    fi
}

# CPU time of the whole machine so far, in clock ticks, from the "cpu" line
# of /proc/stat: busy_ticks is what processes used (user, nice, system;
# interrupt and softirq time is counted apart here and charged to no
# process), all_ticks includes the rest.
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4; exit}' /proc/stat; }
all_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
idle_ticks() { awk '/^cpu / {print $5 + $6; exit}' /proc/stat; }
# proc_ticks PID: utime + stime of a process (all its threads).
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)

# Waits (at most QUIET_WAIT s) for one second in which the machine is at
# least QUIET % idle; prints how long it waited and whether it got one.
wait_quiet() {
    local start=$SECONDS b0 i0 b1 i1
    while :; do
        b0=$(all_ticks) i0=$(idle_ticks)
        sleep 1
        b1=$(all_ticks) i1=$(idle_ticks)
        if [ $(((i1 - i0) * 100)) -ge $((QUIET * (b1 - b0 + i1 - i0))) ]; then
            [ $((SECONDS - start)) -gt 1 ] && echo "   (waited $((SECONDS - start)) s for a quiet machine)"
            return 0
        fi
        if [ $((SECONDS - start)) -ge "$QUIET_WAIT" ]; then
            echo "   (the machine is busy with other work: $(((b1 - b0) * 100 / (b1 - b0 + i1 - i0))) % of its CPU time; running anyway)"
            return 0
        fi
    done
}

# --- runs -----------------------------------------------------------------
RUN_SERVERS=()
for p in $PEERS; do [ -z "${SKIP[$p]+x}" ] && RUN_SERVERS+=("$p"); done
if [ "$PIN" = 1 ] && [ "$UNPINNED" = 1 ] && [[ " $PEERS " == *" weim "* ]]; then
    RUN_SERVERS+=(weim-unpinned)
fi
[ ${#RUN_SERVERS[@]} -gt 0 ] || die "no server to measure"

echo
if [ "$PIN" = 1 ]; then
    echo "== servers pinned to CPU 0 (taskset -c 0), load generator pinned to CPU 1;"
    echo "   weim-unpinned: weim's default reactors and the load generator on any CPU"
else
    echo "== servers and load generator unpinned"
fi
echo "== scenarios: $SCENARIOS; servers: ${RUN_SERVERS[*]}"
[ -n "$PEER_SCENARIOS" ] && echo "== $CONNS connections for $PEER_SCENARIOS"
[[ "$CHAT_SCENARIOS" == *chat* || "$CHAT_SCENARIOS" == *group* ]] &&
    echo "== chat: $PAIRS pairs × $MESSAGES messages, window $WINDOW;" \
    "group: $MEMBERS members, $GROUP_ROUNDS messages every $INTERVAL_MS ms; stores: ${RUN_STORES[*]:-none}"
[[ " $SCENARIOS " == *" soak "* ]] && echo "== soak: $SOAK_CONNS connections, $SOAK_RATE msg/s," \
    "$SOAK_CHURN % closed per second (away ${SOAK_AWAY_MS} ms), ${SOAK_DURATION} s" \
    "(${SOAK_WARMUP} s warm-up); stores: ${RUN_STORES[*]:-none}"

# Each run uses fresh source addresses, so that an earlier run's TIME_WAIT
# sockets never collide with its ports.
SRC=2
mkdir -p "$TMP/runs"
declare -A RUNS=()
for server in "${RUN_SERVERS[@]}"; do
    pinned=$PIN
    [ "$server" = weim-unpinned ] && pinned=0
    RUNS[$server]=
    for s in $SCENARIOS; do
        case "$s" in
        slow) labels="slow-base slow" ;;
        chat | group | soak)
            # The peers have no chat.
            [[ "$server" == weim* ]] || continue
            labels=
            for st in "${RUN_STORES[@]}"; do labels+="$s-$st "; done
            ;;
        *) labels=$s ;;
        esac
        for label in $labels; do
            store=sqlite
            case "$label" in
            chat-*) store=${label#chat-} conns=$((2 * PAIRS)) ;;
            soak-*) store=${label#soak-} conns=$SOAK_CONNS ;;
            group-*) store=${label#group-} conns=$MEMBERS ;;
            *) conns=$CONNS ;;
            esac
            src_step=$(((conns + 4999) / 5000)) # weim-load's default --per-src is 5000
            wait_quiet
            if ! start_server "$server" "$pinned" "$TMP/$server.$label.log" "$store" "$label"; then
                echo "== $server did not start for $label; see above"
                stop_server
                drop_db
                continue
            fi
            if [[ "$server" == weim* ]] &&
                ! setup_store "${label%%-*}" "$store" "$conns" >"$TMP/$server.$label.setup" 2>&1; then
                echo "== $server: $label: inserting the users, friendships or the group failed:"
                tail -n 5 "$TMP/$server.$label.setup"
                stop_server
                drop_db
                continue
            fi
            [ $((SRC + src_step)) -le 250 ] || SRC=2
            out=$TMP/runs/$server.$label.json
            run_timeout=$TIMEOUT
            [[ "$label" == soak-* ]] && run_timeout=$SOAK_TIMEOUT
            args=(--target "$LISTEN" --secret-file "$TMP/jwt_secret.bench"
                --pid "$SERVER_PID" --timeout "$run_timeout" --src-first "$SRC" --json "$out")
            case "$label" in
            idle) args=(idle "${args[@]}" --conns "$CONNS") ;;
            broadcast) args=(broadcast "${args[@]}" --conns "$CONNS" --admin-token "$ADMIN"
                --rounds "$ROUNDS" --body-bytes "$BODY_BYTES") ;;
            slow-base | slow)
                pct=$SLOW_PCT
                [ "$label" = slow-base ] && pct=0
                args=(slow "${args[@]}" --conns "$CONNS" --admin-token "$ADMIN" --rounds "$SLOW_ROUNDS"
                    --body-bytes "$SLOW_BODY_BYTES" --slow-pct "$pct")
                ;;
            chat-*) args=(chat "${args[@]}" --pairs "$PAIRS" --messages "$MESSAGES"
                --window "$WINDOW" --body-bytes "$CHAT_BODY_BYTES" --settle 1) ;;
            group-*) args=(group "${args[@]}" --members "$MEMBERS" --rounds "$GROUP_ROUNDS"
                --interval-ms "$INTERVAL_MS" --body-bytes "$CHAT_BODY_BYTES" --settle 1) ;;
            soak-*) args=(soak "${args[@]}" --conns "$SOAK_CONNS" --rate "$SOAK_RATE"
                --churn "$SOAK_CHURN" --duration "$SOAK_DURATION" --warmup "$SOAK_WARMUP"
                --drain-wait "$SOAK_DRAIN" --away-ms "$SOAK_AWAY_MS" --body-bytes "$CHAT_BODY_BYTES"
                --settle 1) ;;
            esac
            load=("$LOAD")
            [ "$pinned" = 1 ] && load=(taskset -c 1 "$LOAD")
            echo
            echo "== $server: $label (pid $SERVER_PID on $LISTEN, CPUs $([ "$pinned" = 1 ] && echo 0 || echo all))"
            rc=0
            busy0=$(busy_ticks)
            srv0=$(proc_ticks "$SERVER_PID")
            store_pid=
            [ "$store" = mariadb ] && [[ "$label" == chat-* || "$label" == group-* || "$label" == soak-* ]] &&
                store_pid=$MARIADB_PID
            st0=0
            [ -n "$store_pid" ] && st0=$(proc_ticks "$store_pid")
            # A hard bound on top of weim-load's own --timeout.
            timeout -k 5 $((run_timeout + 60)) "${load[@]}" "${args[@]}" >"$TMP/$server.$label.out" 2>&1 &
            LOAD_PID=$!
            wait "$LOAD_PID" || rc=$?
            LOAD_PID=
            busy=$(($(busy_ticks) - busy0))
            srv=$(($(proc_ticks "$SERVER_PID") - srv0))
            st=0
            [ -n "$store_pid" ] && st=$(($(proc_ticks "$store_pid") - st0))
            secs() { awk -v t="$1" -v hz="$HZ" 'BEGIN {printf "%.2f", t / hz}'; }
            printf '{"machine_busy_s": %s, "server_cpu_s": %s, "store_cpu_s": %s}\n' \
                "$(secs "$busy")" "$(secs "$srv")" "$([ -n "$store_pid" ] && secs "$st" || echo null)" >"$out.cpu"
            grep -E 'signed in|failed|per second|RSS|fan-out completion|receiver latency|messages|slow readers|closed|deliveries|latency|completion|behind|Cmd 2|stopped|soak|receipts|catch-up|delay|sends|reconnect|lost' \
                "$TMP/$server.$label.out" | sed 's/^/   /' || true
            [ "$rc" = 0 ] || { echo "   weim-load exited with $rc:"; tail -n 5 "$TMP/$server.$label.out"; }
            kill -0 "$SERVER_PID" 2>/dev/null || {
                echo "   the server died during $label:"
                tail -n 10 "$TMP/$server.$label.log"
            }
            stop_server
            drop_db
            [ -s "$out" ] && RUNS[$server]+="$label "
            SRC=$((SRC + src_step))
            sleep 1
        done
    done
done

# --- results --------------------------------------------------------------
mkdir -p bench/results
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=bench/results/$STAMP.json
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT-dirty"
describe() {
    case "$1" in
    weim) echo "weim, pinned: one reactor" ;;
    weim-unpinned) echo "weim, default reactors (one per CPU), unpinned" ;;
    tokio-ws) echo "tokio-tungstenite 0.30, default WebSocketConfig" ;;
    tokio-ws-4k) echo "tokio-tungstenite 0.30, 4 KiB read and write buffers" ;;
    node-ws) echo "Node.js $(node --version 2>/dev/null) ws $(sed -n 's/.*"version": "\(.*\)".*/\1/p' \
        "$NODE_WS/node_modules/ws/package.json" 2>/dev/null | head -n 1)" ;;
    go-hub) echo "$(go version 2>/dev/null | cut -d' ' -f3) gorilla/websocket $(dpkg-query -W \
        -f='${Version}' golang-github-gorilla-websocket-dev 2>/dev/null), hub as in the chat example" ;;
    esac
}
{
    printf '{\n"date": "%s",\n"commit": "%s",\n"pinned": %s,\n' "$STAMP" "$COMMIT" \
        "$([ "$PIN" = 1 ] && echo true || echo false)"
    printf '"machine": {"cpus": %s, "mem_kib": %s, "kernel": "%s", "mariadb": "%s"},\n' "$(nproc --all)" \
        "$(awk '/^MemTotal/ {print $2}' /proc/meminfo)" "$(uname -r)" "$(printf '%s' "$MARIADB_VERSION" | tr -d '"\\')"
    printf '"params": {"conns": %s, "rounds": %s, "body_bytes": %s, "slow_pct": %s, ' \
        "$CONNS" "$ROUNDS" "$BODY_BYTES" "$SLOW_PCT"
    printf '"slow_rounds": %s, "slow_body_bytes": %s, "timeout_s": %s, ' \
        "$SLOW_ROUNDS" "$SLOW_BODY_BYTES" "$TIMEOUT"
    printf '"stores": "%s", "pairs": %s, "messages": %s, "window": %s, "members": %s, ' \
        "${RUN_STORES[*]:-}" "$PAIRS" "$MESSAGES" "$WINDOW" "$MEMBERS"
    printf '"group_rounds": %s, "interval_ms": %s, "chat_body_bytes": %s, ' \
        "$GROUP_ROUNDS" "$INTERVAL_MS" "$CHAT_BODY_BYTES"
    printf '"soak_conns": %s, "soak_rate": %s, "soak_churn": %s, "soak_duration": %s, ' \
        "$SOAK_CONNS" "$SOAK_RATE" "$SOAK_CHURN" "$SOAK_DURATION"
    printf '"weim_bin": "%s", "weim_limits": "%s", ' "$WEIM" "$LIMITS_NOTE"
    printf '"soak_warmup": %s, "soak_drain": %s, "soak_away_ms": %s},\n' \
        "$SOAK_WARMUP" "$SOAK_DRAIN" "$SOAK_AWAY_MS"
    printf '"skipped": {'
    sep=
    for p in "${!SKIP[@]}"; do
        printf '%s"%s": "%s"' "$sep" "$p" "$(printf '%s' "${SKIP[$p]}" | tr -d '"\\')"
        sep=', '
    done
    for st in "${!SKIP_STORE[@]}"; do
        printf '%s"store %s": "%s"' "$sep" "$st" "$(printf '%s' "${SKIP_STORE[$st]}" | tr -d '"\\')"
        sep=', '
    done
    printf '},\n"servers": ['
    ssep=
    for server in "${RUN_SERVERS[@]}"; do
        pinned=$PIN
        [ "$server" = weim-unpinned ] && pinned=0
        printf '%s\n{"name": "%s", "about": "%s", "cpus": "%s", "runs": [' "$ssep" "$server" \
            "$(describe "$server" | tr -d '"\\')" "$([ "$pinned" = 1 ] && echo 0 || echo all)"
        rsep=
        for label in ${RUNS[$server]}; do
            printf '%s\n{"label": "%s", "cpu": %s, "report": ' "$rsep" "$label" \
                "$(cat "$TMP/runs/$server.$label.json.cpu" 2>/dev/null || echo null)"
            cat "$TMP/runs/$server.$label.json"
            printf '}'
            rsep=,
        done
        printf ']}'
        ssep=,
    done
    printf '\n]\n}\n'
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo
if command -v python3 >/dev/null; then
    python3 bench/tables.py "$OUT" || echo "bench/tables.py failed; the raw numbers are in $OUT"
else
    echo "python3 not found: no tables (the numbers are in $OUT)"
fi
echo
echo "== results written to $OUT"
