// The weim web app: sign-in, friends, groups and conversations, built on
// the SDK (/sdk/weim.js). Plain DOM, no framework; every text node is set
// with textContent (no HTML from the network is ever parsed).
import { Weim } from "/sdk/weim.js";
import { t, language, toggleLanguage } from "/web/i18n.js";

const WITHDRAW_WINDOW = 120000;
const PAGE = 30;

const client = new Weim({
  token: localStorage.getItem("weim.token") || "",
  user: JSON.parse(localStorage.getItem("weim.user") || "null"),
});
client.on("token", (tok) => localStorage.setItem("weim.token", tok));

/** Everything the page shows. */
const S = {
  tab: "friends",
  friends: [],
  groups: [],
  reqs: [],
  joins: [],
  results: [],
  groupResults: [],
  unread: new Map(), // conversation key → count
  active: null, // {key, kind: "u"|"g", id, title}
  messages: new Map(), // id → message of the active conversation
  oldest: 0,
  exhausted: false,
  members: new Map(), // uid → name, of the active group
  showMembers: false,
};

// --- DOM helpers ------------------------------------------------------------

/** Builds an element: h("div.a.b#id", {attrs, on: {click}}, ...children). */
function h(spec, attrs = {}, ...children) {
  const [, tag, rest] = spec.match(/^([a-z0-9]+)(.*)$/);
  const el = document.createElement(tag);
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === "text") el.textContent = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (sel) => document.querySelector(sel);

function toast(text, kind = "info") {
  let box = $("#toasts");
  if (!box) document.body.append((box = h("div#toasts")));
  const el = h(`div.toast.${kind}`, { text });
  box.append(el);
  while (box.children.length > 3) box.firstChild.remove();
  setTimeout(() => el.remove(), 2500);
}

function avatar(url, name) {
  return h("img.avatar", { src: url || "/public/avatar/default.png", alt: name || "" });
}

function fmtTime(ms) {
  const d = new Date(Number(ms));
  const now = new Date();
  const hm = d.toLocaleTimeString(language() === "zh" ? "zh-CN" : "en-GB", { hour: "2-digit", minute: "2-digit" });
  return d.toDateString() === now.toDateString() ? hm : `${d.toLocaleDateString()} ${hm}`;
}

const errText = (e) => (e && e.msg) || String(e);

// --- sign-in ----------------------------------------------------------------

function renderAuth() {
  document.title = "weim";
  const app = $("#app");
  app.className = "auth-page";
  const user = h("input#username", { placeholder: t("username"), autocomplete: "username", maxlength: 20, required: true });
  const pass = h("input#password", { type: "password", placeholder: t("password"), autocomplete: "current-password", maxlength: 20, required: true });
  const err = h("p.error#auth-error");
  const go = async (how) => {
    err.textContent = "";
    try {
      const u = how === "register" ? await client.register(user.value.trim(), pass.value) : await client.login(user.value.trim(), pass.value);
      localStorage.setItem("weim.user", JSON.stringify(u));
      localStorage.setItem("weim.token", client.token);
      start();
    } catch (e) {
      err.textContent = errText(e);
    }
  };
  app.replaceChildren(
    h("div.auth-card",
      {},
      h("div.brand", {}, h("img.logo", { src: "/web/icon.svg", alt: "" }), h("h1", { text: "weim" })),
      h("p.tagline", { text: t("tagline") }),
      h("form#auth", { on: { submit: (e) => { e.preventDefault(); go("login"); } } },
        h("label", {}, h("span", { text: t("username") }), user),
        h("label", {}, h("span", { text: t("password") }), pass),
        h("p.hint", { text: t("usernameHint") }),
        err,
        h("button.primary#login-btn", { type: "submit", text: t("login") }),
        h("button.secondary#register-btn", { type: "button", text: t("register"), on: { click: () => go("register") } })),
      h("button.link.lang", { type: "button", text: t("language"), on: { click: () => { toggleLanguage(); renderAuth(); } } })),
  );
  user.focus();
}

// --- main view --------------------------------------------------------------

async function start() {
  try {
    const me = await client.api("user/me");
    client.user = { ...client.user, ...me.user };
    localStorage.setItem("weim.user", JSON.stringify(client.user));
  } catch (e) {
    if (e.code === 1001) return signOut(false);
  }
  renderShell();
  client.on("message", onMessage);
  client.on("notice", onNotice);
  client.on("state", renderState);
  client.on("error", (e) => {
    if (e.code === 4001 || e.code === 1001) signOut(false, t("sessionEnded"));
  });
  await Promise.all([loadFriends(), loadGroups(), loadReqs(), loadJoins()]);
  client.connect().catch(() => {});
  setInterval(loadFriends, 20000);
}

async function signOut(callServer = true, why) {
  if (callServer) await client.logout().catch(() => {});
  else client.close();
  localStorage.removeItem("weim.token");
  localStorage.removeItem("weim.user");
  location.reload();
  if (why) toast(why);
}

function renderShell() {
  const app = $("#app");
  app.className = "main";
  const me = client.user;
  app.replaceChildren(
    h("aside.side",
      {},
      h("header.me",
        {},
        avatar(me.avatar, me.username),
        h("div.who", {}, h("strong#me-name", { text: me.nickname || me.username }), h("span.state#state", { text: t("connecting") })),
        h("button.icon.lang", { type: "button", title: "中文 / English", text: t("language"), on: { click: () => { toggleLanguage(); renderShell(); } } }),
        h("button.icon#logout", { type: "button", title: t("logout"), text: "⎋", on: { click: () => signOut() } })),
      h("nav.tabs",
        {},
        ["friends", "groups"].map((tab) =>
          h(`button.tab${S.tab === tab ? ".on" : ""}`, { type: "button", dataset: { tab }, on: { click: () => selectTab(tab) } },
            t(tab), h("span.badge.tab-badge", { dataset: { tab } })))),
      h("div.lists#lists")),
    h("main.conv#conv"),
  );
  renderState(client.state);
  renderLists();
  renderConversation();
}

function selectTab(tab) {
  S.tab = tab;
  for (const b of document.querySelectorAll("button.tab")) b.classList.toggle("on", b.dataset.tab === tab);
  renderLists();
}

function renderState(s) {
  const el = $("#state");
  if (!el) return;
  el.textContent = t(s === "online" ? "online" : s === "connecting" ? "connecting" : "offline");
  el.className = `state ${s}`;
}

function unreadOf(key) {
  return S.unread.get(key) || 0;
}

function badge(n) {
  return h(`span.badge${n ? ".on" : ""}`, { text: n ? (n > 99 ? "99+" : String(n)) : "" });
}

function renderLists() {
  const box = $("#lists");
  if (!box) return;
  for (const b of document.querySelectorAll(".tab-badge")) {
    const prefix = b.dataset.tab === "friends" ? "u:" : "g:";
    let n = 0;
    for (const [k, v] of S.unread) if (k.startsWith(prefix)) n += v;
    b.textContent = n ? String(n) : "";
    b.classList.toggle("on", n > 0);
  }
  if (S.tab === "friends") box.replaceChildren(...friendsPane());
  else box.replaceChildren(...groupsPane());
}

function convItem(key, title, sub, av, online) {
  return h(`li.item${S.active?.key === key ? ".active" : ""}`, { dataset: { key }, on: { click: () => openConversation(key, title) } },
    h("div.av", {}, avatar(av, title), online === undefined ? null : h(`span.dot${online ? ".online" : ""}`)),
    h("div.meta", {}, h("span.name", { text: title }), sub ? h("span.sub", { text: sub }) : null),
    badge(unreadOf(key)));
}

function friendsPane() {
  const search = h("input.search#friend-search", { type: "search", placeholder: t("searchUsers"), on: { keydown: (e) => e.key === "Enter" && searchUsers(e.target.value) } });
  const out = [search];
  const results = S.results.filter((u) => !S.friends.some((f) => f.Id === u.Id));
  if (results.length) {
    out.push(h("ul.list#friend-results", {}, results.map((u) =>
      h("li.row", { dataset: { uid: u.Id } }, avatar(u.Avatar, u.Username),
        h("div.meta", {}, h("span.name", { text: u.Nickname || u.Username }), h("span.sub", { text: `@${u.Username}` })),
        h("button.small.add", { type: "button", text: u.sent ? t("requested") : t("add"), disabled: !!u.sent || u.Id === client.user.id, on: { click: () => addFriend(u) } })))));
  }
  const pending = S.reqs.filter((r) => Number(r.Status) === 0);
  if (pending.length) {
    out.push(h("h3", { text: t("requests") }), h("ul.list#friend-reqs", {}, pending.map((r) =>
      h("li.row", { dataset: { uid: r.Id } }, avatar(r.Avatar, r.Username),
        h("div.meta", {}, h("span.name", { text: r.Nickname || r.Username }), h("span.sub", { text: r.Reason || `@${r.Username}` })),
        h("button.small.accept", { type: "button", text: t("accept"), on: { click: () => handleFriend(r, 1) } }),
        h("button.small.ghost.reject", { type: "button", text: t("reject"), on: { click: () => handleFriend(r, -1) } })))));
  }
  out.push(h("h3", { text: t("myFriends") }));
  out.push(S.friends.length
    ? h("ul.list#friends", {}, S.friends.map((f) => convItem(`u:${f.Id}`, f.Nickname || f.Username, `@${f.Username}`, f.Avatar, !!f.Online)))
    : h("p.empty", { text: t("noFriends") }));
  return out;
}

function groupsPane() {
  const name = h("input#group-name", { placeholder: t("newGroup"), maxlength: 64 });
  const out = [
    h("form.inline#group-create", { on: { submit: (e) => { e.preventDefault(); createGroup(name.value); } } }, name, h("button.small", { type: "submit", text: t("create") })),
    h("input.search#group-search", { type: "search", placeholder: t("searchGroups"), on: { keydown: (e) => e.key === "Enter" && searchGroups(e.target.value) } }),
  ];
  if (S.groupResults.length) {
    out.push(h("ul.list#group-results", {}, S.groupResults.map((g) =>
      h("li.row", { dataset: { gid: g.Id } }, h("div.gav", { text: (g.Name || "#").slice(0, 1).toUpperCase() }),
        h("div.meta", {}, h("span.name", { text: g.Name }), h("span.sub", { text: `${g.Members ?? ""} ${t("members")}` })),
        h("button.small.join", { type: "button", text: g.sent ? t("requested") : t("join"), disabled: !!g.sent || S.groups.some((m) => m.Id === g.Id), on: { click: () => joinGroup(g) } })))));
  }
  if (S.joins.length) {
    out.push(h("h3", { text: t("joinRequests") }), h("ul.list#group-reqs", {}, S.joins.map((j) =>
      h("li.row", { dataset: { join: j.JoinId } }, avatar(j.Avatar, j.Username),
        h("div.meta", {}, h("span.name", { text: j.Nickname || j.Username }), h("span.sub", { text: j.GroupName })),
        h("button.small.accept", { type: "button", text: t("accept"), on: { click: () => handleJoin(j, 1) } }),
        h("button.small.ghost.reject", { type: "button", text: t("reject"), on: { click: () => handleJoin(j, -1) } })))));
  }
  out.push(h("h3", { text: t("myGroups") }));
  out.push(S.groups.length
    ? h("ul.list#groups", {}, S.groups.map((g) => {
      const item = convItem(`g:${g.Id}`, g.Name, g.OUid === client.user.id ? t("owner") : "", null);
      item.querySelector(".av").replaceChildren(h("div.gav", { text: (g.Name || "#").slice(0, 1).toUpperCase() }));
      return item;
    }))
    : h("p.empty", { text: t("noGroups") }));
  return out;
}

// --- data -------------------------------------------------------------------

async function loadFriends() {
  try {
    S.friends = (await client.api("im/friend/list", { page: 1, size: 100 })).lists || [];
    renderLists();
    if (S.active?.kind === "u") renderConvHeader();
  } catch { /* shown on the next refresh */ }
}
async function loadGroups() {
  S.groups = (await client.api("im/group/my", { page: 1, size: 100 }).catch(() => ({}))).list || [];
  renderLists();
}
async function loadReqs() {
  S.reqs = (await client.api("im/friend/add/reqs", { page: 1, size: 50 }).catch(() => ({}))).list || [];
  renderLists();
}
async function loadJoins() {
  S.joins = (await client.api("im/group/join/list", { page: 1, size: 50 }).catch(() => ({}))).list || [];
  renderLists();
}

async function searchUsers(word) {
  if (!word.trim()) return;
  try {
    S.results = (await client.api("im/friend/search", { word: word.trim() })).list || [];
  } catch (e) {
    toast(errText(e), "error");
  }
  renderLists();
  $("#friend-search").value = word;
}
async function addFriend(u) {
  try {
    await client.api("im/friend/add/request", { username: u.Username, channel: "web", reason: "" });
    u.sent = true;
    toast(t("sent"));
  } catch (e) {
    toast(errText(e), "error");
  }
  renderLists();
}
async function handleFriend(r, status) {
  try {
    await client.api("im/friend/add/handle", { f_uid: r.Id, status });
  } catch (e) {
    toast(errText(e), "error");
  }
  await Promise.all([loadReqs(), loadFriends()]);
}
async function createGroup(name) {
  if (!name.trim()) return;
  try {
    await client.api("im/group/create", { name: name.trim() });
    toast(t("created"));
  } catch (e) {
    toast(errText(e), "error");
  }
  await loadGroups();
}
async function searchGroups(word) {
  if (!word.trim()) return;
  try {
    S.groupResults = (await client.api("im/group/search", { word: word.trim() })).list || [];
  } catch (e) {
    toast(errText(e), "error");
  }
  renderLists();
  $("#group-search").value = word;
}
async function joinGroup(g) {
  try {
    await client.api("im/group/join/request", { group_id: g.Id });
    g.sent = true;
    toast(t("sent"));
  } catch (e) {
    toast(errText(e), "error");
  }
  renderLists();
}
async function handleJoin(j, status) {
  try {
    await client.api("im/group/join/handle", { join_id: j.JoinId, status });
  } catch (e) {
    toast(errText(e), "error");
  }
  await loadJoins();
}

// --- conversation -----------------------------------------------------------

function keyOf(m) {
  const me = client.user.id;
  return Number(m.Ope) === 1 ? `g:${m.ToId}` : `u:${Number(m.FromId) === me ? m.ToId : m.FromId}`;
}

async function openConversation(key, title) {
  const [kind, id] = key.split(":");
  S.active = { key, kind, id: Number(id), title };
  S.messages = new Map();
  S.oldest = 0;
  S.exhausted = false;
  S.members = new Map();
  S.showMembers = false;
  S.unread.delete(key);
  renderLists();
  renderConversation();
  if (kind === "g") loadMembers();
  await loadHistory(true);
  $("#composer")?.focus();
}

function closeConversation() {
  S.active = null;
  renderLists();
  renderConversation();
}

function renderConversation() {
  const conv = $("#conv");
  if (!conv) return;
  $("#app").classList.toggle("in-conv", !!S.active);
  if (!S.active) {
    conv.replaceChildren(h("div.placeholder", {}, h("img.logo.big", { src: "/web/icon.svg", alt: "" }), h("p", { text: t("pick") })));
    return;
  }
  const file = h("input#file", { type: "file", hidden: true, on: { change: (e) => uploadFiles(e.target.files) } });
  const box = h("textarea#composer", { rows: 1, placeholder: t("typeHere"), on: { keydown: composerKey } });
  const list = h("div.messages#messages", { on: { scroll: (e) => e.target.scrollTop < 40 && loadHistory(false) } });
  conv.replaceChildren(
    h("header.conv-head#conv-head"),
    h("div.conv-body", {}, list, S.showMembers ? membersPanel() : null),
    h("footer.composer", {},
      h("button.icon#attach", { type: "button", title: t("attach"), text: "＋", on: { click: () => file.click() } }),
      file, box,
      h("button.primary#send", { type: "button", text: t("send"), on: { click: sendComposer } })),
  );
  renderConvHeader();
  renderMessages(true);
}

function renderConvHeader() {
  const head = $("#conv-head");
  if (!head || !S.active) return;
  const a = S.active;
  const friend = a.kind === "u" ? S.friends.find((f) => f.Id === a.id) : null;
  const group = a.kind === "g" ? S.groups.find((g) => g.Id === a.id) : null;
  head.replaceChildren(
    ...[h("div.title", {}, h("button.icon.back", { type: "button", text: "‹", on: { click: closeConversation } }), h("h2#conv-title", { text: a.title }),
      friend ? h(`span.presence${friend.Online ? ".online" : ""}`, { text: friend.Online ? t("online") : t("offline") }) : null),
    a.kind === "g" ? h("div.actions", {},
      h("button.small.ghost#show-members", { type: "button", text: `${t("members")} (${S.members.size})`, on: { click: () => { S.showMembers = !S.showMembers; renderConversation(); } } }),
      group && group.OUid !== client.user.id ? h("button.small.ghost.danger#leave", { type: "button", text: t("leave"), on: { click: leaveGroup } }) : null) : null,
    ].filter(Boolean),
  );
}

function membersPanel() {
  return h("aside.members#members", {}, h("h3", { text: t("members") }),
    h("ul", {}, [...S.members.entries()].map(([, m]) => h("li", {}, avatar(m.Avatar, m.Username), h("span", { text: m.Nickname || m.Username })))));
}

async function loadMembers() {
  const a = S.active;
  try {
    const data = await client.api("im/group/members", { group_id: a.id, page: 1, size: 100 });
    if (S.active !== a) return;
    for (const m of data.list || data.lists || []) S.members.set(Number(m.Id ?? m.UserId ?? m.id), m);
    renderConvHeader();
    renderMessages(false);
    if (S.showMembers) renderConversation();
  } catch (e) {
    toast(errText(e), "error");
  }
}

async function leaveGroup() {
  try {
    await client.api("im/group/leave", { group_id: S.active.id });
    toast(t("left"));
    S.active = null;
    renderConversation();
    await loadGroups();
  } catch (e) {
    toast(errText(e), "error");
  }
}

let loading = false;
async function loadHistory(first) {
  const a = S.active;
  if (!a || loading || S.exhausted) return;
  loading = true;
  try {
    const params = a.kind === "g" ? { group_id: a.id } : { peer: a.id };
    params.size = PAGE;
    if (S.oldest) params.before = S.oldest;
    const list = (await client.api("im/chat/history", params)).list || [];
    if (S.active !== a) return;
    if (list.length < PAGE) S.exhausted = true;
    for (const m of list) {
      if (!S.messages.has(m.Id)) S.messages.set(m.Id, m);
      S.oldest = S.oldest ? Math.min(S.oldest, m.Id) : m.Id;
    }
    const el = $("#messages");
    const before = el ? el.scrollHeight - el.scrollTop : 0;
    renderMessages(first);
    if (!first && el) el.scrollTop = el.scrollHeight - before;
  } catch (e) {
    toast(errText(e), "error");
  } finally {
    loading = false;
  }
}

function senderName(m) {
  const me = client.user;
  if (Number(m.FromId) === me.id) return me.nickname || me.username;
  const member = S.members.get(Number(m.FromId));
  if (member) return member.Nickname || member.Username;
  const f = S.friends.find((x) => x.Id === Number(m.FromId));
  return f ? f.Nickname || f.Username : `#${m.FromId}`;
}

/** Only http(s) links are followed; anything else is shown as text. */
function safeUrl(u) {
  try {
    return ["http:", "https:"].includes(new URL(u, location.href).protocol);
  } catch {
    return false;
  }
}

function messageBody(m) {
  if (Number(m.Status) === -1) return h("em.withdrawn", { text: t("withdrawn") });
  const type = Number(m.Type);
  if (type !== 0 && !safeUrl(m.Body)) return h("span.text", { text: m.Body });
  if (type === 1) return h("a.pic", { href: m.Body, target: "_blank", rel: "noopener" }, h("img.picture", { src: m.Body, alt: "", loading: "lazy" }));
  if (type === 2 || type === 3 || type === 6) {
    const name = decodeURIComponent(String(m.Body).split("/").pop() || "file");
    return h("a.file", { href: m.Body, download: name, target: "_blank", rel: "noopener" }, h("span.file-icon", { text: "⬇" }), h("span", { text: name }), h("span.sub", { text: t("download") }));
  }
  return h("span.text", { text: m.Body });
}

function renderMessages(stick) {
  const el = $("#messages");
  if (!el) return;
  const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 60;
  const me = client.user.id;
  const sorted = [...S.messages.values()].sort((x, y) => (x.Id || 1e18) - (y.Id || 1e18) || x.CreatedAt - y.CreatedAt);
  const rows = [h("div.more", { text: S.exhausted ? t("noEarlier") : t("earlier"), on: { click: () => loadHistory(false) } })];
  for (const m of sorted) {
    const mine = Number(m.FromId) === me;
    const canWithdraw = mine && m.Id && Number(m.Status) !== -1 && Date.now() - Number(m.CreatedAt) < WITHDRAW_WINDOW;
    rows.push(h(`div.msg${mine ? ".mine" : ""}${m.pending ? ".pending" : ""}`, { dataset: { id: m.Id || "" } },
      S.active.kind === "g" && !mine ? h("span.from", { text: senderName(m) }) : null,
      h(`div.bubble${Number(m.Type) === 1 && Number(m.Status) !== -1 ? ".media" : ""}`, {}, messageBody(m)),
      h("div.info", {}, h("time", { text: fmtTime(m.CreatedAt || Date.now()) }),
        canWithdraw ? h("button.link.withdraw", { type: "button", text: t("withdraw"), on: { click: () => withdraw(m) } }) : null)));
  }
  el.replaceChildren(...rows);
  if (stick || atBottom) el.scrollTop = el.scrollHeight;
}

function composerKey(e) {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    sendComposer();
  }
}

function sendComposer() {
  const box = $("#composer");
  const text = box.value.trim();
  if (!text) return;
  box.value = "";
  send(0, text);
}

let localSeq = 0;
async function send(type, body) {
  const a = S.active;
  const local = { Id: 0, local: ++localSeq, FromId: client.user.id, ToId: a.id, Ope: a.kind === "g" ? 1 : 0, Type: type, Body: body, Status: 0, CreatedAt: Date.now(), pending: true };
  const tmpKey = `local-${local.local}`;
  S.messages.set(tmpKey, local);
  renderMessages(true);
  try {
    const id = a.kind === "g" ? await client.sendToGroup(a.id, body, type) : await client.sendToUser(a.id, body, type);
    S.messages.delete(tmpKey);
    if (S.active === a && !S.messages.has(id)) S.messages.set(id, { ...local, Id: id, pending: false });
  } catch (e) {
    S.messages.delete(tmpKey);
    toast(errText(e), "error");
  }
  if (S.active === a) renderMessages(true);
}

async function uploadFiles(files) {
  for (const f of files) {
    const type = /^image\/(png|jpeg|gif|webp|bmp)$/.test(f.type) ? 1 : 6;
    try {
      const url = await client.upload(f, type);
      await send(type, url);
    } catch (e) {
      toast(`${t("uploadFailed")}: ${errText(e)}`, "error");
    }
  }
  $("#file").value = "";
}

async function withdraw(m) {
  try {
    await client.api(Number(m.Ope) === 1 ? "im/chat/withdraw/group" : "im/chat/withdraw/user", { message_id: m.Id });
    markWithdrawn(m.Id);
  } catch (e) {
    toast(errText(e), "error");
  }
}

function markWithdrawn(id) {
  const m = S.messages.get(Number(id));
  if (m) {
    m.Status = -1;
    m.Body = "";
    renderMessages(false);
  }
}

// --- pushes -----------------------------------------------------------------

function onMessage(m) {
  const key = keyOf(m);
  const msg = { Id: m.Id, FromId: m.FromId, ToId: m.ToId, Ope: m.Ope, Type: m.Type, Body: m.Body, Status: 0, CreatedAt: m.Time };
  if (S.active?.key === key) {
    if (!S.messages.has(m.Id)) S.messages.set(m.Id, msg);
    renderMessages(false);
    if (document.hidden) S.unread.set(key, unreadOf(key) + 1);
  } else if (Number(m.FromId) !== client.user.id) {
    S.unread.set(key, unreadOf(key) + 1);
    renderLists();
  }
}

function onNotice(n) {
  switch (Number(n.Cmd)) {
    case 7:
    case 11:
      markWithdrawn(n.Body);
      break;
    case 8:
      toast(t("friendRequest", n.Body || `#${n.FromId}`));
      loadReqs();
      break;
    case 9:
      toast(t("friendAccepted"));
      loadFriends();
      break;
    case 15:
      toast(t("friendRejected"));
      break;
    case 16:
      toast(t("friendRemoved"));
      loadFriends();
      break;
    case 12:
      toast(t("joinRequest", S.groups.find((g) => g.Id === Number(n.ToId))?.Name || `#${n.ToId}`));
      loadJoins();
      break;
    case 13:
      toast(t("joinAccepted"));
      loadGroups();
      break;
    case 17:
      toast(t("joinRejected"));
      break;
    case 14:
      toast(t("kicked"));
      loadGroups();
      break;
    case -1:
      toast(`${t("broadcast")}: ${n.Body}`);
      break;
    default:
  }
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && S.active && unreadOf(S.active.key)) {
    S.unread.delete(S.active.key);
    renderLists();
  }
});

document.documentElement.lang = language() === "zh" ? "zh-CN" : "en";
if (client.token && client.user) start();
else renderAuth();
