#!/usr/bin/env bash
# Checks the README's first command the way a newcomer meets it: a fresh
# Debian root (debootstrap, minbase) that has only the Rust toolchain — this
# machine's default toolchain copied in, with the C compiler and libc
# headers every Rust toolchain needs to link — and no protoc, no MariaDB,
# no Redis, no etcd. It clones the committed repository into that root,
# runs `cargo run --release` there, waits for the node to listen, registers
# a user over REST, fetches the web app a browser gets at /, and stops the
# node.
#
# Needs root, network access to Debian's and crates.io's registries, and
# 10–30 minutes (a whole release build). Not part of scripts/test.sh.
#
# usage: scripts/fresh-machine-check.sh   (KEEP=1 keeps the root for a look)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

log() { printf '== %s\n' "$*"; }
[ "$(id -u)" = 0 ] || { echo "fresh-machine-check: needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || {
  log "installing debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
port=8080
if ss -ltn | grep -q ":$port "; then
  echo "fresh-machine-check: port $port is taken; the README's node listens there" >&2
  exit 1
fi

root=$(mktemp -d /var/tmp/weim-fresh.XXXXXX)
node_pid=""
cleanup() {
  if [ -n "$node_pid" ]; then kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
  for m in dev/pts dev proc; do umount "$root/$m" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $root"; else rm -rf "$root"; fi
}
trap cleanup EXIT

start=$(date +%s)
log "debootstrap bookworm (minbase) into $root"
debootstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates,curl,git \
  bookworm "$root" http://deb.debian.org/debian >"$root.debootstrap.log" 2>&1 ||
  { tail -20 "$root.debootstrap.log"; exit 1; }
rm -f "$root.debootstrap.log"

toolchain=$(rustc --print sysroot)
log "copying the Rust toolchain ($(basename "$toolchain")) to /opt/rust"
cp -a "$toolchain" "$root/opt/rust"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# The host's own CA certificates, for a network that intercepts TLS.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null 2>&1
fi
git clone -q "$repo" "$root/src/weim"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"

if chroot "$root" sh -c 'command -v protoc' >/dev/null; then
  echo "fresh-machine-check: the fresh root has protoc" >&2
  exit 1
fi

log "in the fresh root: cargo run --release"
chroot "$root" env -i HOME=/root PATH=/opt/rust/bin:/usr/bin:/bin LANG=C.UTF-8 \
  sh -c 'cd /src/weim && exec cargo run --release' >"$root/run.log" 2>&1 &
node_pid=$!
for _ in $(seq 1 3600); do
  grep -q "listening on" "$root/run.log" && break
  kill -0 "$node_pid" 2>/dev/null || { tail -40 "$root/run.log"; echo "fresh-machine-check: the command ended" >&2; exit 1; }
  sleep 1
done
grep -q "listening on" "$root/run.log" || { tail -40 "$root/run.log"; echo "fresh-machine-check: no node after 60 min" >&2; exit 1; }
built=$(date +%s)
grep -E "Finished|listening on" "$root/run.log"

name="fresh$(date +%s)"
answer=$(curl -fsS -XPOST "127.0.0.1:$port/api/v1/register" -d "username=$name&password=secret123")
echo "register → $answer"
case "$answer" in *'"code":0'*) ;; *) echo "fresh-machine-check: registration failed" >&2; exit 1 ;; esac
page=$(curl -fsS -H 'Accept: text/html' "127.0.0.1:$port/" | grep -o '<title>[^<]*</title>' || true)
echo "GET / (a browser) → ${page:-no page}"
[ -n "$page" ] || { echo "fresh-machine-check: no web app at /" >&2; exit 1; }
echo "fresh-machine-check: ok — built and started in $((built - start)) s (debootstrap included)"
