#!/usr/bin/env python3
"""Prints the tables of a bench/run.sh result file (Markdown), one per
scenario, every server a row, plus the ratio weim : best peer; chat, group
and soak (weim only) one row per server and store.

usage: python3 bench/tables.py bench/results/<date>.json
"""

import json
import sys

MIB = 1024.0


def get(d, *path):
    for p in path:
        if not isinstance(d, dict) or d.get(p) is None:
            return None
        d = d[p]
    return d


def fmt(v, digits=1):
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, int) or (abs(v) >= 1000 and digits <= 1):
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def ratio(w, best):
    if w is None or best is None or best == 0:
        return "–"
    return f"{w / best:.2f}"


def table(title, columns, rows, ratio_row=None):
    """columns: [(header, key, better)] with better in {"low", "high", None}."""
    print(f"\n### {title}\n")
    print("| server | " + " | ".join(c[0] for c in columns) + " |")
    print("| --- | " + " | ".join("---:" for _ in columns) + " |")
    for name, vals in rows:
        print(f"| {name} | " + " | ".join(vals[c[1]][1] for c in columns) + " |")
    if ratio_row:
        w = dict(rows).get("weim")
        peers = [v for n, v in rows if n not in ("weim", "weim-unpinned")]
        if w and peers:
            cells = []
            for _, key, better in columns:
                nums = [p[key][0] for p in peers if p[key][0] is not None]
                if better is None or not nums or w[key][0] is None:
                    cells.append("")
                    continue
                cells.append(ratio(w[key][0], min(nums) if better == "low" else max(nums)))
            print("| **weim : best peer** | " + " | ".join(cells) + " |")


def other_cpu(run):
    """CPU seconds that processes other than the server, its store (MariaDB)
    and the load generator used during a run (other work on the machine)."""
    cpu, rep = run.get("cpu") or {}, run.get("report") or {}
    if cpu.get("other_cpu_s") is not None:
        return cpu["other_cpu_s"]
    busy, srv = cpu.get("machine_busy_s"), cpu.get("server_cpu_s")
    lg = get(rep, "loadgen", "cpu_total_s")
    if busy is None or srv is None or lg is None:
        return None
    return max(0.0, busy - srv - lg - (cpu.get("store_cpu_s") or 0.0))


def with_other(vals, *runs):
    o = [other_cpu(r) for r in runs]
    total = None if any(x is None for x in o) else sum(o)
    vals["other"] = (total, fmt(total, 1))
    return vals


def idle_row(r):
    signed = get(r, "conns", "signed_in")
    per_conn = get(r, "node", "rss_per_conn_bytes")
    before = get(r, "node", "rss_before_kib")
    settled = get(r, "node", "rss_settled_kib")
    return {
        "signed": (signed, f"{fmt(signed)} of {fmt(get(r, 'conns', 'requested'))}"),
        "rate": (get(r, "signin", "per_second"), fmt(get(r, "signin", "per_second"))),
        "lat": (get(r, "signin", "latency_ms", "p99"), fmt(get(r, "signin", "latency_ms", "p99"))),
        "rss": (settled, f"{fmt(before and before / MIB)} → {fmt(settled and settled / MIB)}"),
        "per": (per_conn, fmt(per_conn, 0) if per_conn is not None else "–"),
        "cpu": (get(r, "node", "cpu_signin_s"), fmt(get(r, "node", "cpu_signin_s"), 2)),
        "lcpu": (get(r, "loadgen", "cpu_signin_s"), fmt(get(r, "loadgen", "cpu_signin_s"), 2)),
    }


def bcast_row(r):
    q = get(r, "rounds", "latency_ms") or {}
    return {
        "done": (get(r, "rounds", "done"), f"{fmt(get(r, 'rounds', 'done'))} of {fmt(get(r, 'rounds', 'planned'))}"),
        "f50": (get(r, "rounds", "fanout_p50_ms"), fmt(get(r, "rounds", "fanout_p50_ms"))),
        "fmax": (get(r, "rounds", "fanout_max_ms"), fmt(get(r, "rounds", "fanout_max_ms"))),
        "p50": (q.get("p50"), fmt(q.get("p50"))),
        "p99": (q.get("p99"), fmt(q.get("p99"))),
        "lost": (get(r, "rounds", "lost"), fmt(get(r, "rounds", "lost"))),
        "late": (get(r, "rounds", "late"), fmt(get(r, "rounds", "late"))),
        "closed": (get(r, "rounds", "readers_closed"), fmt(get(r, "rounds", "readers_closed"))),
        "cpu": (get(r, "node", "cpu_rounds_s"), fmt(get(r, "node", "cpu_rounds_s"), 2)),
    }


def growth_mib(r):
    peak = get(r, "node", "rss_peak_kib")
    settled = get(r, "node", "rss_settled_kib")
    if peak is None or settled is None:
        return None
    return max(0, peak - settled) / MIB


def slow_row(base, slow):
    bp99 = get(base, "rounds", "latency_ms", "p99")
    sp99 = get(slow, "rounds", "latency_ms", "p99")
    x = sp99 / bp99 if bp99 and sp99 is not None else None
    bg, sg = growth_mib(base), growth_mib(slow)
    nslow = get(slow, "slow", "slow_conns")
    closed = get(slow, "slow", "closed")
    per_slow = max(0.0, sg - (bg or 0)) * MIB * 1024 / nslow if sg is not None and nslow else None
    return {
        "bp99": (bp99, fmt(bp99)),
        "sp99": (sp99, fmt(sp99)),
        "x": (x, f"{x:.2f}×" if x is not None else "–"),
        "f50": (get(slow, "rounds", "fanout_p50_ms"),
                f"{fmt(get(base, 'rounds', 'fanout_p50_ms'))} / {fmt(get(slow, 'rounds', 'fanout_p50_ms'))}"),
        "rss": (sg, f"{fmt(bg)} / {fmt(sg)}"),
        "per": (per_slow, fmt(per_slow / 1024, 0) if per_slow is not None else "–"),
        "closed": (closed, f"{fmt(closed)} of {fmt(nslow)}"),
        "left": (get(slow, "slow", "frames_at_end"), fmt(get(slow, "slow", "frames_at_end"))),
        "lost": (get(slow, "rounds", "lost"),
                 f"{fmt(get(base, 'rounds', 'lost'))} / {fmt(get(slow, 'rounds', 'lost'))}"),
    }


def p50_99(q):
    q = q or {}
    return (q.get("p99"), f"{fmt(q.get('p50'))} / {fmt(q.get('p99'))}")


def chat_row(run):
    r = run["report"]
    c = r.get("chat") or {}
    cpu = run.get("cpu") or {}
    fails = c.get("failures") or {}
    refused = c.get("refused")
    return {
        "got": (c.get("delivered"), f"{fmt(c.get('delivered'))} of {fmt(c.get('expected'))}"),
        "rate": (c.get("per_second"), fmt(c.get("per_second"))),
        "ack": p50_99(c.get("ack_ms")),
        "lat": p50_99(c.get("delivery_ms")),
        "lost": (c.get("lost"), f"{fmt(c.get('lost'))} / {fmt(c.get('duplicates'))}"),
        "refused": (refused, fmt(refused) + (" (" + ", ".join(f"{k} ×{v}" for k, v in fails.items()) + ")"
                                             if fails else "")),
        "compl": (c.get("completion_p50_ms"),
                  f"{fmt(c.get('completion_p50_ms'))} / {fmt(c.get('completion_max_ms'))}"),
        "full": (c.get("messages_complete"),
                 f"{fmt(c.get('messages_complete'))} of {fmt(c.get('messages_per_sender'))}"),
        "lag": (c.get("send_lag_max_ms"), fmt(c.get("send_lag_max_ms"))),
        "cpu": (get(r, "node", "cpu_chat_s"), fmt(get(r, "node", "cpu_chat_s"), 2)),
        "scpu": (cpu.get("store_cpu_s"), fmt(cpu.get("store_cpu_s"), 2)),
        "lcpu": (get(r, "loadgen", "cpu_total_s"), fmt(get(r, "loadgen", "cpu_total_s"), 2)),
    }


def chat_tables(res, servers):
    p = res["params"]
    for kind in ("chat", "group"):
        rows = []
        for name, runs in servers:
            for label, run in sorted(runs.items()):
                if label.startswith(kind + "-"):
                    store = label[len(kind) + 1:]
                    rows.append((f"{name} · {store}", with_other(chat_row(run), run)))
        if not rows:
            continue
        if kind == "chat":
            title = (f"chat: {p.get('pairs', 0):,} pairs × {p.get('messages')} messages each way, "
                     f"window {p.get('window')}, {p.get('chat_body_bytes')} B")
            cols = [("delivered", "got"), ("msg/s end to end", "rate"),
                    ("ack p50 / p99 ms", "ack"), ("delivery p50 / p99 ms", "lat"),
                    ("lost / dup", "lost"), ("refused", "refused"), ("server CPU s", "cpu"),
                    ("MariaDB CPU s", "scpu"), ("client CPU s", "lcpu"), ("other CPU s", "other")]
        else:
            title = (f"group: {p.get('members', 0):,} members, {p.get('group_rounds')} messages "
                     f"one every {p.get('interval_ms')} ms, {p.get('chat_body_bytes')} B")
            cols = [("delivered", "got"), ("deliveries/s", "rate"),
                    ("delivery p50 / p99 ms", "lat"), ("completion p50 / max ms", "compl"),
                    ("reached all", "full"), ("lost / dup", "lost"), ("ack p50 / p99 ms", "ack"),
                    ("sender late max ms", "lag"), ("server CPU s", "cpu"),
                    ("MariaDB CPU s", "scpu"), ("client CPU s", "lcpu"), ("other CPU s", "other")]
        print(f"\n### {title}\n")
        print("| server · store | " + " | ".join(c[0] for c in cols) + " |")
        print("| --- | " + " | ".join("---:" for _ in cols) + " |")
        for name, vals in rows:
            print(f"| {name} | " + " | ".join(vals[c[1]][1] for c in cols) + " |")


def soak_row(run):
    r = run["report"]
    s = r.get("soak") or {}
    rss = s.get("rss") or {}
    q = s.get("latency_ms") or {}
    lost, off = s.get("lost"), s.get("lost_offline")
    within = rss.get("within_band")
    warm, end, top = (rss.get(k) for k in ("after_warmup_kib", "end_kib", "max_kib"))
    mib = lambda v: fmt(v / MIB) if v is not None else "–"
    return {
        "sent": (s.get("sent"), fmt(s.get("sent"))),
        "got": (s.get("received"), fmt(s.get("received"))),
        "lost": (lost, fmt(lost) + (f" ({fmt(off)} offline)" if off else "")),
        "dup": (s.get("duplicates"), fmt(s.get("duplicates"))),
        "catchup": (s.get("by_catchup"), fmt(s.get("by_catchup"))),
        "lat": (q.get("p99"), f"{fmt(q.get('p50'))} / {fmt(q.get('p99'))} / {fmt(q.get('max'))}"),
        "reconn": (s.get("reconnected"), f"{fmt(s.get('reconnected'))} of {fmt(s.get('reconnects'))}"),
        "rss": (end, f"{mib(warm)} → {mib(end)} ({mib(top)})"),
        "band": (within, "yes" if within else ("no" if within is not None else "–")),
        "cpu": (s.get("node_cpu_s"), fmt(s.get("node_cpu_s"), 2)),
        "scpu": ((run.get("cpu") or {}).get("store_cpu_s"), fmt((run.get("cpu") or {}).get("store_cpu_s"), 2)),
        "lcpu": (get(r, "loadgen", "cpu_total_s"), fmt(get(r, "loadgen", "cpu_total_s"), 2)),
    }


def soak_tables(res, servers):
    p = res["params"]
    rows = []
    for name, runs in servers:
        for label, run in sorted(runs.items()):
            if label.startswith("soak-"):
                rows.append((f"{name} · {label[5:]}", with_other(soak_row(run), run)))
    if not rows:
        return
    away = f" (away {p['soak_away_ms']} ms)" if p.get("soak_away_ms") else ""
    print(f"\n### soak: {p.get('soak_conns', 0):,} connections, {p.get('soak_rate')} msg/s, "
          f"{p.get('soak_churn')} % closed per second{away}, {p.get('soak_duration')} s "
          f"({p.get('soak_warmup')} s warm-up), {p.get('chat_body_bytes')} B\n")
    cols = [("stored", "sent"), ("received", "got"), ("lost", "lost"), ("dup", "dup"),
            ("by catch-up", "catchup"), ("live p50 / p99 / max ms", "lat"),
            ("reconnects", "reconn"), ("RSS MiB warm → end (max)", "rss"),
            ("RSS within ±10 %", "band"), ("server CPU s", "cpu"), ("MariaDB CPU s", "scpu"),
            ("client CPU s", "lcpu"), ("other CPU s", "other")]
    print("| server · store | " + " | ".join(c[0] for c in cols) + " |")
    print("| --- | " + " | ".join("---:" for _ in cols) + " |")
    for name, vals in rows:
        print(f"| {name} | " + " | ".join(vals[c[1]][1] for c in cols) + " |")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        res = json.load(f)
    p = res["params"]
    pinned = res.get("pinned")
    labels = {r["label"] for s in res["servers"] for r in s["runs"]}
    conns = (f"{p['conns']:,} connections "
             if labels & {"idle", "broadcast", "slow", "slow-base"} else "")
    print(f"## {res['date']} — {conns}"
          f"({'servers on CPU 0, load generator on CPU 1' if pinned else 'unpinned'}; commit {res['commit']})")
    for k, v in (res.get("skipped") or {}).items():
        print(f"\nskipped {k}: {v}")
    servers = [(s["name"], {r["label"]: r for r in s["runs"]}) for s in res["servers"]]
    groups = [("", [s for s in servers if s[0] != "weim-unpinned"])]
    if any(s[0] == "weim-unpinned" for s in servers):
        groups.append((" — weim with its default reactors, unpinned (load generator unpinned)",
                       [s for s in servers if s[0] == "weim-unpinned"]))
    for suffix, group in groups:
        ratio_row = suffix == ""
        rows = [(n, with_other(idle_row(r["idle"]["report"]), r["idle"]))
                for n, r in group if "idle" in r]
        if rows:
            table(f"idle{suffix}", [
                ("signed in", "signed", None),
                ("sign-ins/s", "rate", "high"),
                ("sign-in p99 ms", "lat", "low"),
                ("RSS MiB before → settled", "rss", None),
                ("RSS B/conn", "per", "low"),
                ("server CPU s", "cpu", "low"),
                ("client CPU s", "lcpu", None),
                ("other CPU s", "other", None),
            ], rows, ratio_row)
        rows = [(n, with_other(bcast_row(r["broadcast"]["report"]), r["broadcast"]))
                for n, r in group if "broadcast" in r]
        if rows:
            table(f"broadcast, {p['rounds']} rounds of {p['body_bytes']} B{suffix}", [
                ("rounds", "done", None),
                ("fan-out p50 ms", "f50", "low"),
                ("fan-out max ms", "fmax", "low"),
                ("receiver p50 ms", "p50", "low"),
                ("receiver p99 ms", "p99", "low"),
                ("lost", "lost", None),
                ("late", "late", None),
                ("server CPU s", "cpu", "low"),
                ("other CPU s", "other", None),
            ], rows, ratio_row)
        rows = [(n, with_other(slow_row(r["slow-base"]["report"], r["slow"]["report"]),
                               r["slow-base"], r["slow"]))
                for n, r in group if "slow" in r and "slow-base" in r]
        if rows:
            table(f"slow readers: {p['slow_pct']} % never read; {p['slow_rounds']} rounds of "
                  f"{p['slow_body_bytes']:,} B{suffix}", [
                      ("readers p99 ms, no slow", "bp99", "low"),
                      ("readers p99 ms, slow", "sp99", "low"),
                      ("p99 slow : none", "x", "low"),
                      ("fan-out p50 ms none / slow", "f50", None),
                      ("RSS growth MiB none / slow", "rss", None),
                      ("extra RSS KiB per slow reader", "per", "low"),
                      ("slow readers closed", "closed", None),
                      ("frames left", "left", None),
                      ("readers lost none / slow", "lost", None),
                      ("other CPU s", "other", None),
                  ], rows, ratio_row)
    chat_tables(res, servers)
    soak_tables(res, servers)


if __name__ == "__main__":
    main()
