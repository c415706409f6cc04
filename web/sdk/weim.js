// weim JavaScript SDK: one ES module, no dependency, no build step.
//
//   import { Weim } from "/sdk/weim.js";
//   const c = new Weim({ base: "http://host:8080" });
//   await c.login("alice01", "secret1");
//   c.on("message", m => console.log(m.Body));
//   await c.connect();
//   await c.sendToUser(42, "hello");
//
// REST calls go to `<base>/api/v1/<path>` with the `Login-Token` header; the
// socket is `<base>/ws` (http → ws, https → wss). Every push is handed to
// the application once (duplicates dropped by `Id`), then acknowledged with
// Cmd 22 (batched); sends over the socket carry a `Cid` and are sent again,
// with the same `Cid`, after a reconnect until the node answers them.
// Documented in docs/CLIENT.md.

/** Pushes that carry a chat message (Cmd 6 friend, Cmd 10 group). */
const MESSAGE_CMDS = new Set([6, 10]);
/** Codes a node closes with after which reconnecting cannot help. */
const FINAL_CLOSES = new Map([
  [4000, "replaced by a newer connection"],
  [4001, "logged out"],
]);
/** How many message ids are remembered to drop duplicates. */
const SEEN_MAX = 20000;
/** Delay before a batched Cmd 22, ms (or sooner, after ACK_EVERY messages). */
const ACK_DELAY = 100;
const ACK_EVERY = 64;
/** Reconnect backoff, ms: from BACKOFF_MIN doubling to BACKOFF_MAX, with jitter. */
const BACKOFF_MIN = 300;
const BACKOFF_MAX = 15000;
/** A Cmd 30 every HEARTBEAT ms; no answer within HEARTBEAT_WAIT → reconnect. */
const HEARTBEAT = 25000;
const HEARTBEAT_WAIT = 10000;

/** An error answer of the node, or of the SDK: `{code, msg}`. */
export class WeimError extends Error {
  constructor(code, msg) {
    super(msg);
    this.code = code;
    this.msg = msg;
  }
}

/** A client of one weim node (or of a cluster behind one address). */
export class Weim {
  /**
   * @param {object} [opts]
   * @param {string} [opts.base]  REST base, e.g. "http://host:8080"; default: this page's origin
   * @param {string} [opts.token] a token kept from an earlier session
   * @param {object} [opts.user]  the user of that token
   */
  constructor(opts = {}) {
    const origin = typeof location !== "undefined" ? location.origin : "";
    this.base = String(opts.base || origin).replace(/\/+$/, "");
    this.wsUrl = this.base.replace(/^http/, "ws") + "/ws";
    this.token = opts.token || "";
    this.user = opts.user || null;
    this.state = "offline";
    this._handlers = new Map();
    this._ws = null;
    this._want = false; // connect() called and not closed: keep reconnecting
    this._attempt = 0;
    this._timer = null;
    this._signedIn = null; // {resolve, reject} of the pending connect()
    this._pending = new Map(); // Cid → {frame, resolve, reject, sent}
    this._seen = new Set();
    this._seenOrder = [];
    this._lastId = 0; // Id of the last message frame received on this socket
    this._ackedId = 0;
    this._unacked = 0;
    this._ackTimer = null;
    this._beat = null;
    this._beatWait = null;
    this._cidSeq = 0;
    this._cidBase = Math.random().toString(36).slice(2, 10);
  }

  /**
   * Subscribes to "message", "notice", "state", "token" or "error";
   * returns a function that unsubscribes.
   */
  on(event, fn) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(fn);
    return () => this._handlers.get(event).delete(fn);
  }

  _emit(event, value) {
    for (const fn of this._handlers.get(event) || []) {
      try {
        fn(value);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
  }

  // --- REST ---------------------------------------------------------------

  /**
   * Calls `POST <base>/api/v1/<path>` with `params` (an object, sent as a
   * form, or a FormData, sent as multipart) and the token. Resolves with
   * `data`; rejects with a WeimError `{code, msg}`. A refreshed token in
   * `data.t` replaces the current one.
   */
  async api(path, params = {}) {
    let body;
    if (typeof FormData !== "undefined" && params instanceof FormData) {
      body = params;
    } else {
      body = new URLSearchParams();
      for (const [k, v] of Object.entries(params)) {
        if (v !== undefined && v !== null) body.append(k, String(v));
      }
    }
    const headers = {};
    if (this.token) headers["Login-Token"] = this.token;
    let res;
    try {
      res = await fetch(`${this.base}/api/v1/${path.replace(/^\/+/, "")}`, {
        method: "POST",
        headers,
        body,
      });
    } catch (e) {
      throw new WeimError(-1, `network: ${e.message}`);
    }
    let env;
    try {
      env = await res.json();
    } catch {
      throw new WeimError(-1, `HTTP ${res.status}`);
    }
    if (env.code !== 0) throw new WeimError(env.code, env.msg);
    const data = env.data ?? {};
    if (data && typeof data.t === "string" && data.t) this._setToken(data.t);
    return data;
  }

  _setToken(t) {
    if (t !== this.token) {
      this.token = t;
      this._emit("token", t);
    }
  }

  /** Creates an account and signs in; resolves to the user `{id, username, …}`. */
  register(username, password) {
    return this._signIn("register", username, password);
  }

  /** Signs in; resolves to the user `{id, username, …}`. */
  login(username, password) {
    return this._signIn("login", username, password);
  }

  async _signIn(path, username, password) {
    this.token = "";
    const data = await this.api(path, { username, password });
    this.user = data.user;
    return data.user;
  }

  /** Ends the session on the node (the token is refused from now on) and closes. */
  async logout() {
    try {
      if (this.token) await this.api("logout");
    } finally {
      this.close();
      this.token = "";
      this.user = null;
    }
  }

  /**
   * Uploads a File or Blob for a message: `type` 1 picture, 2 voice,
   * 3 video, 6 file. Resolves to its absolute URL.
   */
  async upload(file, type, name) {
    const form = new FormData();
    form.append("type", String(type));
    form.append("file", file, name || file.name || "file");
    return (await this.api("im/chat/upload", form)).url;
  }

  // --- socket -------------------------------------------------------------

  /**
   * Opens the socket and signs in (declaring acknowledgements); resolves
   * once signed in. Pending messages follow as "message" events. Until
   * close(), a lost connection is opened again with backoff and jitter.
   */
  connect() {
    if (!this.token) return Promise.reject(new WeimError(1001, "not signed in"));
    this._want = true;
    if (this.state === "online") return Promise.resolve(this.user);
    const done = new Promise((resolve, reject) => {
      const prev = this._signedIn;
      this._signedIn = {
        resolve: (v) => {
          prev?.resolve(v);
          resolve(v);
        },
        reject: (e) => {
          prev?.reject(e);
          reject(e);
        },
      };
    });
    if (!this._ws && !this._timer) this._open();
    return done;
  }

  /** Closes the socket and stops reconnecting; unanswered sends are rejected. */
  close() {
    this._want = false;
    clearTimeout(this._timer);
    this._timer = null;
    this._flushAck();
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
      ws.close(1000);
    }
    this._stopBeat();
    const err = new WeimError(-1, "closed");
    for (const p of this._pending.values()) p.reject(err);
    this._pending.clear();
    this._signedIn?.reject(err);
    this._signedIn = null;
    this._setState("offline");
  }

  /** Sends to a friend over the socket; resolves with the stored message Id. */
  sendToUser(uid, body, type = 0) {
    return this._send(0, uid, body, type);
  }

  /** Sends to a group over the socket; resolves with the stored message Id. */
  sendToGroup(groupId, body, type = 0) {
    return this._send(1, groupId, body, type);
  }

  _send(ope, to, body, type) {
    const Cid = `${this._cidBase}-${Date.now().toString(36)}-${++this._cidSeq}`;
    const frame = { Cmd: 20, Ope: ope, ToId: Number(to), Type: Number(type), Body: String(body), Cid };
    return new Promise((resolve, reject) => {
      this._pending.set(Cid, { frame, resolve, reject, sent: false });
      if (this.state === "online") this._write(Cid);
    });
  }

  _write(cid) {
    const p = this._pending.get(cid);
    if (!p || !this._ws || this._ws.readyState !== 1) return;
    p.sent = true;
    this._ws.send(JSON.stringify(p.frame));
  }

  _setState(s) {
    if (this.state !== s) {
      this.state = s;
      this._emit("state", s);
    }
  }

  _open() {
    this._timer = null;
    if (!this._want) return;
    this._setState("connecting");
    let ws;
    try {
      ws = new WebSocket(this.wsUrl);
    } catch (e) {
      this._emit("error", new WeimError(-1, `socket: ${e.message}`));
      this._retry();
      return;
    }
    this._ws = ws;
    this._lastId = 0;
    this._ackedId = 0;
    this._unacked = 0;
    ws.onopen = () => ws.send(JSON.stringify({ Cmd: 3, Body: this.token, Ack: true }));
    ws.onmessage = (ev) => this._frame(ws, ev.data);
    ws.onclose = (ev) => this._closed(ws, ev.code);
    ws.onerror = () => {};
  }

  _closed(ws, code) {
    if (ws !== this._ws) return;
    this._ws = null;
    this._stopBeat();
    clearTimeout(this._ackTimer);
    this._ackTimer = null;
    for (const p of this._pending.values()) p.sent = false;
    const final = FINAL_CLOSES.get(code);
    if (final) {
      this._want = false;
      const err = new WeimError(code, final);
      this._signedIn?.reject(err);
      this._signedIn = null;
      this._setState("offline");
      this._emit("error", err);
      return;
    }
    this._setState(this._want ? "connecting" : "offline");
    this._retry();
  }

  _retry() {
    if (!this._want || this._timer) return;
    const step = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** Math.min(this._attempt, 10));
    this._attempt += 1;
    const delay = step / 2 + Math.random() * (step / 2);
    this._timer = setTimeout(() => this._open(), delay);
  }

  _frame(ws, text) {
    let f;
    try {
      f = JSON.parse(text);
    } catch {
      return;
    }
    const cmd = Number(f.Cmd);
    if (cmd === 4) return this._online(ws);
    if (cmd === 31) {
      clearTimeout(this._beatWait);
      this._beatWait = null;
      return;
    }
    if (cmd === 2) return this._failure(ws, f);
    if (cmd === 21) {
      const p = this._pending.get(f.Body);
      if (p) {
        this._pending.delete(f.Body);
        p.resolve(Number(f.Id));
      }
      return;
    }
    const id = Number(f.Id) || 0;
    if (MESSAGE_CMDS.has(cmd)) {
      if (id > 0) {
        if (!this._seen.has(id)) {
          this._remember(id);
          this._emit("message", f);
        }
        this._received(id);
      } else {
        this._emit("message", f);
      }
      return;
    }
    this._emit("notice", f);
    if (id > 0) this._received(id);
  }

  _online(ws) {
    if (ws !== this._ws) return;
    this._attempt = 0;
    this._setState("online");
    this._startBeat();
    this._signedIn?.resolve(this.user);
    this._signedIn = null;
    for (const cid of this._pending.keys()) this._write(cid);
  }

  /**
   * Cmd 2: before sign-in the token was refused; after it, a send was
   * refused. The frame does not name the send, so every send in flight is
   * asked again over REST with its Cid: a stored one answers its Id, a
   * refused one its reason.
   */
  _failure(ws, f) {
    if (this.state !== "online") {
      this._want = false;
      const err = new WeimError(1001, String(f.Body));
      this._signedIn?.reject(err);
      this._signedIn = null;
      this.close();
      this._emit("error", err);
      return;
    }
    for (const [cid, p] of this._pending) {
      if (!p.sent) continue;
      this._pending.delete(cid);
      const fr = p.frame;
      const path = fr.Ope === 1 ? "im/chat/send/group" : "im/chat/send/user";
      const target = fr.Ope === 1 ? { group_id: fr.ToId } : { to_uid: fr.ToId };
      this.api(path, { ...target, type: fr.Type, body: fr.Body, cid })
        .then((d) => p.resolve(Number(d.id)), p.reject);
    }
  }

  _remember(id) {
    this._seen.add(id);
    this._seenOrder.push(id);
    if (this._seenOrder.length > SEEN_MAX) {
      for (const old of this._seenOrder.splice(0, SEEN_MAX / 4)) this._seen.delete(old);
    }
  }

  /** A frame with `id` was received and handed on: acknowledge it, batched. */
  _received(id) {
    this._lastId = id;
    this._unacked += 1;
    if (this._unacked >= ACK_EVERY) this._flushAck();
    else if (!this._ackTimer) this._ackTimer = setTimeout(() => this._flushAck(), ACK_DELAY);
  }

  _flushAck() {
    clearTimeout(this._ackTimer);
    this._ackTimer = null;
    this._unacked = 0;
    const ws = this._ws;
    if (!ws || ws.readyState !== 1 || this._lastId === this._ackedId) return;
    this._ackedId = this._lastId;
    ws.send(JSON.stringify({ Cmd: 22, Body: String(this._lastId) }));
  }

  _startBeat() {
    this._stopBeat();
    this._beat = setInterval(() => {
      const ws = this._ws;
      if (!ws || ws.readyState !== 1) return;
      ws.send('{"Cmd":30}');
      if (!this._beatWait) {
        this._beatWait = setTimeout(() => {
          this._beatWait = null;
          if (ws === this._ws) ws.close(4002);
        }, HEARTBEAT_WAIT);
      }
    }, HEARTBEAT);
  }

  _stopBeat() {
    clearInterval(this._beat);
    clearTimeout(this._beatWait);
    this._beat = this._beatWait = null;
  }
}
