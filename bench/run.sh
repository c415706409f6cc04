#!/usr/bin/env bash
# weim benchmarks: builds weim and weim-load, starts one weim node on
# loopback with a throw-away data directory, runs the scenarios against it,
# prints their tables and writes bench/results/<date>.json.
# Kills only the node it started (by PID) when it exits.
#
# usage: bench/run.sh [--pin]
#   --pin   node on CPU 0, load generator on CPU 1 (taskset)
# environment:
#   CONNS=10000        connections per scenario (at most 19000: the node's
#                      open-files limit is 20,000 here)
#   ROUNDS=20          broadcast rounds
#   BODY_BYTES=100     broadcast body size
#   SCENARIOS="idle broadcast"   any of: idle broadcast slow
#   SLOW_PCT=1         slow readers in the slow scenario, percent
#   TIMEOUT=120        bound of each scenario, seconds
#   PORT=              node port (default: a free one in 20000-29999)
#   CARGO_TARGET_DIR   where cargo builds (default: ./target)
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
        sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

CONNS=${CONNS:-10000}
ROUNDS=${ROUNDS:-20}
BODY_BYTES=${BODY_BYTES:-100}
SCENARIOS=${SCENARIOS:-idle broadcast}
SLOW_PCT=${SLOW_PCT:-1}
TIMEOUT=${TIMEOUT:-120}
PORT=${PORT:-}

[[ "$CONNS" =~ ^[0-9]+$ ]] && [ "$CONNS" -ge 1 ] && [ "$CONNS" -le 19000 ] ||
    die "CONNS must be 1..19000 (the node's open-files limit is 20,000)"
[[ "$ROUNDS" =~ ^[0-9]+$ ]] && [ "$ROUNDS" -ge 1 ] || die "ROUNDS must be a positive number"
for s in $SCENARIOS; do
    case "$s" in idle | broadcast | slow) ;; *) die "unknown scenario: $s" ;; esac
done
if [ "$PIN" = 1 ]; then
    command -v taskset >/dev/null || die "--pin needs taskset (util-linux)"
    [ "$(nproc --all)" -ge 2 ] || die "--pin needs two CPUs"
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

echo "== building (release)"
cargo build --release -p weim -p weim-loadgen
WEIM=$TARGET_DIR/release/weim
LOAD=$TARGET_DIR/release/weim-load
[ -x "$WEIM" ] && [ -x "$LOAD" ] || die "binaries not found in $TARGET_DIR/release"

TMP=$(mktemp -d /tmp/weim-bench.XXXXXX)
NODE_PID=
cleanup() {
    if [ -n "$NODE_PID" ] && kill -0 "$NODE_PID" 2>/dev/null; then
        kill "$NODE_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$NODE_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$NODE_PID" 2>/dev/null || true
        wait "$NODE_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

printf '{}\n' >"$TMP/empty.yml"
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
(umask 077 && printf '%s' "$SECRET" >"$TMP/jwt_secret.bench")

if [ -z "$PORT" ]; then
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 10000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            PORT=$p
            break
        fi
    done
    [ -n "$PORT" ] || die "no free port found"
fi

NODE_CMD=("$WEIM" --config "$TMP/empty.yml")
LOAD_CMD=("$LOAD")
if [ "$PIN" = 1 ]; then
    NODE_CMD=(taskset -c 0 "${NODE_CMD[@]}")
    LOAD_CMD=(taskset -c 1 "$LOAD")
fi

echo "== starting the node on 127.0.0.1:$PORT$([ "$PIN" = 1 ] && echo ' (CPU 0; load generator on CPU 1)')"
# env and taskset exec the node, so $! is the node's own pid.
env WEIM_HTTP_LISTEN="127.0.0.1:$PORT" \
    WEIM_NODE_DATA_DIR="$TMP" \
    WEIM_HTTP_ADMIN_TOKEN=bench \
    WEIM_AUTH_JWT_SECRET="$SECRET" \
    WEIM_LIMITS_CONNS_PER_USER=8 \
    "${NODE_CMD[@]}" >"$TMP/node.log" 2>&1 &
NODE_PID=$!

for _ in $(seq 300); do
    grep -q 'weim: listening on' "$TMP/node.log" 2>/dev/null && break
    if ! kill -0 "$NODE_PID" 2>/dev/null; then
        tail -n 30 "$TMP/node.log" >&2
        die "the node exited before listening"
    fi
    sleep 0.1
done
grep -q 'weim: listening on' "$TMP/node.log" || {
    tail -n 30 "$TMP/node.log" >&2
    die "the node did not say 'weim: listening on' within 30 s"
}
LISTEN=$(sed -n 's/.*weim: listening on \(127\.[0-9.]*:[0-9]*\).*/\1/p' "$TMP/node.log" | head -n 1)
[ -n "$LISTEN" ] || LISTEN=127.0.0.1:$PORT
echo "== node pid $NODE_PID listening on $LISTEN"

# Each scenario uses fresh source addresses, so that the previous one's
# TIME_WAIT sockets never collide with its ports.
SRC=2
SRC_STEP=$(((CONNS + 4999) / 5000)) # weim-load's default --per-src is 5000
RUN_FILES=()
for s in $SCENARIOS; do
    args=("$s" --target "$LISTEN" --conns "$CONNS" --secret-file "$TMP/jwt_secret.bench"
        --pid "$NODE_PID" --timeout "$TIMEOUT" --src-first "$SRC" --json "$TMP/$s.json")
    case "$s" in
    broadcast) args+=(--admin-token bench --rounds "$ROUNDS" --body-bytes "$BODY_BYTES") ;;
    slow) args+=(--admin-token bench --rounds "$ROUNDS" --body-bytes "$BODY_BYTES" --slow-pct "$SLOW_PCT") ;;
    esac
    echo
    echo "== $s"
    rc=0
    "${LOAD_CMD[@]}" "${args[@]}" || rc=$?
    [ "$rc" = 0 ] || echo "weim-load $s exited with $rc"
    [ -f "$TMP/$s.json" ] && RUN_FILES+=("$TMP/$s.json")
    kill -0 "$NODE_PID" 2>/dev/null || {
        tail -n 30 "$TMP/node.log" >&2
        die "the node died during $s"
    }
    SRC=$((SRC + SRC_STEP))
    sleep 2
done

mkdir -p bench/results
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=bench/results/$STAMP.json
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT-dirty"
{
    printf '{\n"date": "%s",\n"commit": "%s",\n"pinned": %s,\n' "$STAMP" "$COMMIT" \
        "$([ "$PIN" = 1 ] && echo true || echo false)"
    printf '"node": {"pid": %s, "listen": "%s", "cpus": "%s"},\n' "$NODE_PID" "$LISTEN" \
        "$([ "$PIN" = 1 ] && echo 0 || echo all)"
    printf '"runs": ['
    sep=
    for f in ${RUN_FILES[@]+"${RUN_FILES[@]}"}; do
        printf '%s\n' "$sep"
        cat "$f"
        sep=,
    done
    printf ']\n}\n'
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo
echo "== results written to $OUT"
