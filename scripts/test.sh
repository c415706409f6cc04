#!/usr/bin/env bash
# The whole weim test suite on a Debian machine: installs what is missing,
# starts the services the tests talk to (MariaDB, Redis, etcd and an
# S3-compatible server, moto, all on loopback), checks formatting and lints,
# then runs every test and the Autobahn WebSocket conformance cases
# (scripts/autobahn.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*"; }

# --- packages -------------------------------------------------------------
missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
[ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# tests/deploy.rs: the nginx example under a real nginx, the unit through
# `systemd-analyze verify` (works without systemd as PID 1).
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# The browser tests (tests/browser.rs): Chromium driven headless, the CJK
# fonts the web app's Chinese texts need, Node.js for the driver.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -d /usr/share/fonts/opentype/noto ] || missing+=(fonts-noto-cjk)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- services -------------------------------------------------------------
# moto (PyPI) in its own virtualenv: an S3-compatible server that checks
# AWS Signature V4 once authentication is on.
moto_venv=${WEIM_TEST_MOTO_VENV:-$HOME/.cache/weim-test/moto-venv}
if [ ! -x "$moto_venv/bin/moto_server" ]; then
  log "installing moto[server] into $moto_venv"
  python3 -m venv "$moto_venv"
  "$moto_venv/bin/pip" install -q 'moto[server]'
fi

# puppeteer-core (npm), pinned, in its own directory: the DevTools-protocol
# driver of the browser tests, pointed at Debian's chromium.
browser_modules=${WEIM_BROWSER_MODULES:-$HOME/.cache/weim-test/browser}
puppeteer_version=24.43.1
if [ "$(cat "$browser_modules/node_modules/puppeteer-core/package.json" 2>/dev/null |
  sed -n 's/^  "version": "\(.*\)",$/\1/p')" != "$puppeteer_version" ]; then
  log "installing puppeteer-core@$puppeteer_version into $browser_modules"
  mkdir -p "$browser_modules"
  [ -f "$browser_modules/package.json" ] || echo '{"private":true}' >"$browser_modules/package.json"
  (cd "$browser_modules" && npm install -q --no-audit --no-fund "puppeteer-core@$puppeteer_version")
fi
export WEIM_BROWSER_MODULES=$browser_modules

workdir=$(mktemp -d /tmp/weim-test.XXXXXX)
etcd_pid=""
moto_pid=""
cleanup() {
  if [ -n "$etcd_pid" ]; then kill "$etcd_pid" 2>/dev/null || true; fi
  if [ -n "$moto_pid" ]; then kill "$moto_pid" 2>/dev/null || true; fi
  rm -rf "$workdir"
}
trap cleanup EXIT

if ! mariadb-admin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null 2>&1; then
  log "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 1 60); do
    mariadb-admin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null 2>&1 && break
    sleep 0.5
  done
fi
mariadb --protocol=tcp -h127.0.0.1 -uroot -e \
  "CREATE DATABASE IF NOT EXISTS weim_test CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  for _ in $(seq 1 40); do
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break
    sleep 0.25
  done
fi

etcd_port=${TEST_ETCD_PORT:-23790}
log "starting etcd on 127.0.0.1:$etcd_port"
etcd --name weim-test --data-dir "$workdir/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
  --initial-cluster "weim-test=http://127.0.0.1:$((etcd_port + 1))" >"$workdir/etcd.log" 2>&1 &
etcd_pid=$!
for _ in $(seq 1 60); do
  curl -fs "http://127.0.0.1:$etcd_port/health" >/dev/null 2>&1 && break
  sleep 0.25
done

# S3: moto with authentication on. The first four requests may be unsigned
# (INITIAL_NO_AUTH_ACTION_COUNT): they create an IAM user with an access key
# and an allow-all policy, and the bucket; every later request must carry a
# valid SigV4 signature of that key.
s3_port=${TEST_S3_PORT:-23800}
s3_url="http://127.0.0.1:$s3_port"
log "starting moto (S3) on 127.0.0.1:$s3_port"
INITIAL_NO_AUTH_ACTION_COUNT=4 "$moto_venv/bin/moto_server" -H 127.0.0.1 -p "$s3_port" \
  >"$workdir/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 1 80); do
  curl -fs -o /dev/null "$s3_url/moto-api/" && break
  sleep 0.25
done
unsigned() {
  echo "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/us-east-1/$1/aws4_request, SignedHeaders=host, Signature=0"
}
iam_form='Version=2010-05-08&UserName=weim'
curl -fsS -XPOST "$s3_url/" -H "$(unsigned iam)" -d "Action=CreateUser&$iam_form" >/dev/null
s3_keys=$(curl -fsS -XPOST "$s3_url/" -H "$(unsigned iam)" -d "Action=CreateAccessKey&$iam_form")
curl -fsS -XPOST "$s3_url/" -H "$(unsigned iam)" -d "Action=PutUserPolicy&$iam_form" \
  --data-urlencode 'PolicyName=all' \
  --data-urlencode 'PolicyDocument={"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}' >/dev/null
curl -fsS -XPUT "$s3_url/weim-test" -H "$(unsigned s3)" >/dev/null

export TEST_S3_ENDPOINT=${TEST_S3_ENDPOINT:-$s3_url}
export TEST_S3_BUCKET=${TEST_S3_BUCKET:-weim-test}
export TEST_S3_ACCESS_KEY=${TEST_S3_ACCESS_KEY:-$(printf '%s' "$s3_keys" | sed -n 's|.*<AccessKeyId>\([^<]*\)</AccessKeyId>.*|\1|p')}
export TEST_S3_SECRET_KEY=${TEST_S3_SECRET_KEY:-$(printf '%s' "$s3_keys" | sed -n 's|.*<SecretAccessKey>\([^<]*\)</SecretAccessKey>.*|\1|p')}

export TEST_MYSQL_URL=${TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/weim_test}
# tests/deploy.rs runs nginx and systemd-analyze here, never skips them.
unset TEST_ALLOW_MISSING_TOOLS
export TEST_REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379/}
export TEST_ETCD_ENDPOINTS=${TEST_ETCD_ENDPOINTS:-http://127.0.0.1:$etcd_port}

# --- checks and tests -----------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --release --workspace --all-targets -- -D warnings
log "cargo test"
# The peer servers under bench/peers are benchmark tools with no tests:
# bench/run.sh builds them; clippy above still checks them.
# Every test binary runs, so one failure does not hide another.
cargo test --release --no-fail-fast --workspace --exclude weim-peer-tokio-ws
log "Autobahn (RFC 6455 conformance)"
scripts/autobahn.sh
