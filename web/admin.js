// The operator's page: asks for the Admin-Token (kept in this tab's
// sessionStorage only), then every few seconds reads each node's /metrics
// and /healthz (the nodes of the cluster come from /cluster) and draws
// connections, signed-in users, messages/s, deliveries/s, slow-consumer
// drops, store and Redis state, with charts of the last minutes.

const EVERY = 2000; // ms between samples
const KEEP = 150; // samples per chart: 5 minutes
const KEY = "weim.admin";

const root = document.querySelector("#admin");
/** node origin → {id, samples: [{t, conns, signed, msgs, deliv, drops}], last, health, up} */
const nodes = new Map();

function h(tag, cls, text) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text !== undefined) el.textContent = text;
  return el;
}

function askToken(why) {
  const form = h("form", "login");
  const input = h("input");
  input.type = "password";
  input.id = "admin-token";
  input.placeholder = "Admin-Token";
  input.autocomplete = "off";
  const btn = h("button", "primary", "Open");
  btn.type = "submit";
  btn.id = "admin-open";
  form.append(h("h1", "", "weim · operator"), h("p", "muted", "Enter the node's http.admin_token. It stays in this tab only."), input, btn);
  if (why) form.append(h("p", "error", why));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, input.value.trim());
    start();
  });
  root.replaceChildren(form);
  input.focus();
}

async function admin(path) {
  const res = await fetch(path, { headers: { "Admin-Token": sessionStorage.getItem(KEY) || "" } });
  if (res.status === 401 || res.status === 404) throw new Error(res.status === 401 ? "wrong token" : "admin routes are off (http.admin_token is empty)");
  return (await res.json()).data;
}

/** Sums each metric over its labels: name → value. */
function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/);
    if (!m) continue;
    const v = Number(m[3]);
    if (Number.isFinite(v)) out.set(m[1], (out.get(m[1]) || 0) + v);
  }
  return out;
}

async function sample(origin) {
  const n = nodes.get(origin);
  try {
    const [mres, hres] = await Promise.all([fetch(`${origin}/metrics`), fetch(`${origin}/healthz`)]);
    const m = parseMetrics(await mres.text());
    n.health = { ok: hres.ok, text: (await hres.text()).split("\n")[0] };
    n.redis = m.has("weim_redis_up") ? (m.get("weim_redis_up") > 0 ? "up" : "down") : "not used";
    n.etcd = m.has("weim_etcd_up") ? (m.get("weim_etcd_up") > 0 ? "up" : "down") : "not used";
    const now = Date.now();
    const cur = {
      t: now,
      conns: m.get("weim_connections_open") || 0,
      signed: m.get("weim_connections_authenticated") || 0,
      msgsTotal: m.get("weim_commit_messages_total") || 0,
      delivTotal: m.get("weim_frames_out_total") || 0,
      dropsTotal: m.get("weim_slow_consumer_drops_total") || 0,
    };
    const prev = n.samples.at(-1);
    const dt = prev ? (now - prev.t) / 1000 : 0;
    cur.msgs = dt ? Math.max(0, cur.msgsTotal - prev.msgsTotal) / dt : 0;
    cur.deliv = dt ? Math.max(0, cur.delivTotal - prev.delivTotal) / dt : 0;
    cur.drops = dt ? Math.max(0, cur.dropsTotal - prev.dropsTotal) : 0;
    n.samples.push(cur);
    if (n.samples.length > KEEP) n.samples.shift();
    n.up = true;
  } catch (e) {
    n.up = false;
    n.health = { ok: false, text: `unreachable: ${e.message}` };
  }
}

function fmt(v) {
  return v >= 100 ? Math.round(v).toLocaleString() : v >= 10 ? v.toFixed(1) : v.toFixed(2).replace(/\.?0+$/, "") || "0";
}

/** A small line chart of `key` over the samples. */
function chart(samples, key, color) {
  const c = h("canvas", "chart");
  const w = 220, ht = 56, dpr = window.devicePixelRatio || 1;
  c.width = w * dpr;
  c.height = ht * dpr;
  const g = c.getContext("2d");
  g.scale(dpr, dpr);
  const vals = samples.map((s) => s[key]);
  const max = Math.max(1, ...vals);
  g.strokeStyle = "#e5e9f0";
  g.lineWidth = 1;
  for (let i = 1; i < 4; i++) {
    g.beginPath();
    g.moveTo(0, (ht * i) / 4);
    g.lineTo(w, (ht * i) / 4);
    g.stroke();
  }
  if (vals.length > 1) {
    const x = (i) => (w * i) / (KEEP - 1) + (w * (KEEP - vals.length)) / (KEEP - 1);
    const y = (v) => ht - 3 - ((ht - 6) * v) / max;
    g.beginPath();
    vals.forEach((v, i) => (i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v))));
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.stroke();
    g.lineTo(x(vals.length - 1), ht);
    g.lineTo(x(0), ht);
    g.closePath();
    g.globalAlpha = 0.12;
    g.fillStyle = color;
    g.fill();
  }
  return c;
}

const CARDS = [
  ["conns", "Connections", "#2563eb", "conn"],
  ["signed", "Signed in", "#7c3aed", "signed"],
  ["msgs", "Messages/s", "#059669", "msgs"],
  ["deliv", "Deliveries/s", "#d97706", "deliv"],
  ["drops", "Slow-consumer drops", "#dc2626", "drops"],
];

function render() {
  const grid = h("div", "nodes");
  for (const [origin, n] of nodes) {
    const card = h("section", `node ${n.up ? "" : "down"}`);
    card.dataset.origin = origin;
    const last = n.samples.at(-1) || {};
    const head = h("header");
    head.append(h("h2", "", n.id || origin), h("span", "muted", origin));
    const badges = h("div", "badges");
    const st = (label, good, text) => {
      const b = h("span", `pill ${good === null ? "" : good ? "good" : "bad"}`, `${label}: ${text}`);
      badges.append(b);
    };
    st("store", n.health?.ok ?? null, n.health?.ok ? "ok" : n.health?.text || "…");
    st("redis", n.redis === "not used" ? null : n.redis === "up", n.redis || "…");
    st("etcd", n.etcd === "not used" ? null : n.etcd === "up", n.etcd || "…");
    head.append(badges);
    card.append(head);
    const metrics = h("div", "metrics");
    for (const [key, label, color, id] of CARDS) {
      const m = h("div", "metric");
      const total = key === "drops" ? ` (total ${fmt(last.dropsTotal || 0)})` : "";
      const value = h("strong", `value ${id}`, key === "drops" ? fmt(last.dropsTotal || 0) : fmt(last[key] || 0));
      m.append(h("span", "label", label + (key === "drops" ? "" : total)), value, chart(n.samples, key, color));
      metrics.append(m);
    }
    card.append(metrics);
    grid.append(card);
  }
  const top = h("header", "top");
  const out = h("button", "ghost", "Forget token");
  out.addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    location.reload();
  });
  top.append(h("h1", "", "weim · operator"), h("span", "muted", `refreshed ${new Date().toLocaleTimeString()} · every ${EVERY / 1000} s · last ${(KEEP * EVERY) / 60000} min`), out);
  root.replaceChildren(top, grid);
}

let timer = null;
async function tick() {
  try {
    const cluster = await admin("/cluster");
    const servers = cluster.servers || [];
    const want = servers.length
      ? servers.map((s) => [/^https?:\/\//.test(s.addr) ? s.addr : `${location.protocol}//${s.addr}`, s.id])
      : [[location.origin, "this node"]];
    for (const [origin, id] of want) {
      if (!nodes.has(origin)) nodes.set(origin, { id, samples: [] });
    }
    for (const origin of nodes.keys()) if (!want.some(([o]) => o === origin)) nodes.delete(origin);
    await Promise.all([...nodes.keys()].map(sample));
    render();
  } catch (e) {
    clearInterval(timer);
    sessionStorage.removeItem(KEY);
    askToken(e.message);
  }
}

function start() {
  if (!sessionStorage.getItem(KEY)) return askToken();
  clearInterval(timer);
  tick();
  timer = setInterval(tick, EVERY);
}

start();
