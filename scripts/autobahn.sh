#!/usr/bin/env bash
# RFC 6455 conformance: runs the Autobahn TestSuite's cases against a weim
# node's echo endpoint (ws.echo_path) with kosoku, a Python 3 driver of
# Autobahn's case files (PyPI; Autobahn's own runner needs Python 2.7).
#
# Every case of 1.* to 10.* must be OK, NON-STRICT or INFORMATIONAL; the
# compression cases 12.* and 13.* must be declined cleanly (weim negotiates
# no permessage-deflate: UNIMPLEMENTED, with a clean close). Prints one line
# of counts per result and exits 1 on any other outcome. Reports (Autobahn's
# JSON and HTML) are kept in $AUTOBAHN_REPORTS when it is set.
#
# Uses the release binary (built here if needed); scripts/test.sh runs it
# after the Rust tests. Takes about 15 s.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*"; }

kosoku_version=0.1.0
venv=${WEIM_TEST_KOSOKU_VENV:-$HOME/.cache/weim-test/kosoku-venv}
if ! "$venv/bin/kosoku" -h >/dev/null 2>&1 \
  || [ "$("$venv/bin/pip" show kosoku 2>/dev/null | sed -n 's/^Version: //p')" != "$kosoku_version" ]; then
  log "installing kosoku $kosoku_version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "kosoku==$kosoku_version"
fi

cargo build --release --quiet --bin weim

workdir=$(mktemp -d /tmp/weim-autobahn.XXXXXX)
weim_pid=""
cleanup() {
  if [ -n "$weim_pid" ]; then kill "$weim_pid" 2>/dev/null || true; fi
  rm -rf "$workdir"
}
trap cleanup EXIT

# A node with defaults (an empty configuration file), its own data
# directory, the echo endpoint on, and messages up to Autobahn's largest
# (9.1.6 and 9.2.6 send exactly 16 MiB). Only these WEIM_ variables: any
# other of the surrounding environment would change the node.
: >"$workdir/empty.yml"
mkdir "$workdir/data"
unset_weim=()
for name in $(compgen -e | grep '^WEIM_' || true); do unset_weim+=(-u "$name"); done
env "${unset_weim[@]}" \
  WEIM_HTTP_LISTEN=127.0.0.1:0 \
  WEIM_NODE_DATA_DIR="$workdir/data" \
  WEIM_NODE_REACTORS=2 \
  WEIM_NODE_WORKERS=2 \
  WEIM_WS_ECHO_PATH=/echo \
  WEIM_LIMITS_MAX_MESSAGE=16MiB \
  target/release/weim --config "$workdir/empty.yml" >"$workdir/weim.out" 2>"$workdir/weim.log" &
weim_pid=$!
addr=""
for _ in $(seq 1 100); do
  addr=$(sed -n 's/^weim: listening on //p' "$workdir/weim.out")
  [ -n "$addr" ] && break
  kill -0 "$weim_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$addr" ]; then
  cat "$workdir/weim.log" >&2
  echo "autobahn: the weim node did not start" >&2
  exit 1
fi

reports=${AUTOBAHN_REPORTS:-$workdir/reports}
log "Autobahn cases 1-10, 12, 13 (kosoku $kosoku_version) against ws://$addr/echo"
start=$(date +%s)
# kosoku exits 1 when a case does not pass, which the declined compression
# cases never do: the verdicts are judged from its report below.
"$venv/bin/kosoku" "ws://$addr/echo" -o "$reports" \
  -i '1.*' -i '2.*' -i '3.*' -i '4.*' -i '5.*' -i '6.*' -i '7.*' -i '9.*' -i '10.*' \
  -i '12.*' -i '13.*' >"$workdir/kosoku.log" 2>&1 || true
elapsed=$(($(date +%s) - start))

if ! kill -0 "$weim_pid" 2>/dev/null; then
  cat "$workdir/weim.log" >&2
  echo "autobahn: the weim node exited during the run" >&2
  exit 1
fi

failed() {
  tail -n 20 "$workdir/kosoku.log" >&2
  [ -n "${AUTOBAHN_REPORTS:-}" ] || echo "autobahn: AUTOBAHN_REPORTS=<dir> keeps the reports" >&2
  exit 1
}
python3 - "$reports/index.json" "$elapsed" <<'EOF' || failed
import collections
import json
import sys

path, elapsed = sys.argv[1], sys.argv[2]
try:
    with open(path) as f:
        index = json.load(f)
except (OSError, ValueError) as e:
    sys.exit(f"autobahn: no report ({e})")
cases = {cid: r for agent in index.values() for cid, r in agent.items()}

PASS = {"OK", "NON-STRICT", "INFORMATIONAL"}
# Every case of the pinned kosoku: 301 core cases, 216 compression cases.
EXPECTED = {"core": 301, "compression": 216}
counts = collections.Counter()
found = collections.Counter()
bad = []
for cid, r in sorted(cases.items(), key=lambda kv: [int(p) for p in kv[0].split(".")]):
    major = int(cid.split(".")[0])
    behavior, close = r["behavior"], r["behaviorClose"]
    if major in (12, 13):
        found["compression"] += 1
        ok = behavior == "UNIMPLEMENTED" and close == "OK"
    else:
        found["core"] += 1
        ok = behavior in PASS and close in PASS
    counts[f"{'12-13' if major in (12, 13) else '1-10'} {behavior}"] += 1
    if not ok:
        bad.append(f"  {cid}: behavior={behavior}, behaviorClose={close} ({r.get('reportfile')})")

summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
print(f"autobahn: {len(cases)} cases in {elapsed} s: {summary}")
if found != EXPECTED:
    bad.append(f"  cases run: {dict(found)}, expected {EXPECTED}")
if bad:
    print("autobahn: FAILED\n" + "\n".join(bad), file=sys.stderr)
    sys.exit(1)
EOF
