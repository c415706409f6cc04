'use strict';
// node-ws: a broadcast server for the weim benchmarks on the `ws` package,
// written the way its README shows broadcasting (http.createServer +
// WebSocketServer({ server }), iterate wss.clients and send to each open
// one). It speaks the minimal part of weim's protocol that weim-load uses:
// GET /ws, sign-in with Cmd 3 -> Cmd 4, and POST /ws/sendToAll -> Cmd -1 to
// every signed-in connection.
//
// usage: node server.js [ADDR]   (default $LISTEN, else 127.0.0.1:8080)
// environment: JWT_SECRET (HS256 secret of the sign-in tokens; empty =
// accept any token), ADMIN_TOKEN (default "bench").

const http = require('http');
const crypto = require('crypto');
const { WebSocketServer, WebSocket } = require('ws');

const addr = process.argv[2] || process.env.LISTEN || '127.0.0.1:8080';
const colon = addr.lastIndexOf(':');
const host = addr.slice(0, colon);
const port = Number(addr.slice(colon + 1));
const secret = process.env.JWT_SECRET || '';
const adminToken = process.env.ADMIN_TOKEN || 'bench';

function frame(cmd, ope, type, body) {
  return JSON.stringify({
    Cmd: cmd, FromId: 0, ToId: 0, Ope: ope, Type: type, Body: body, Id: 0, Time: Date.now(),
  });
}

// HS256 JWT: signature and expiry.
function verifyToken(token) {
  if (!secret) return true;
  if (typeof token !== 'string') return false;
  const parts = token.split('.');
  if (parts.length !== 3) return false;
  const sig = crypto.createHmac('sha256', secret).update(parts[0] + '.' + parts[1]).digest();
  const given = Buffer.from(parts[2], 'base64url');
  if (given.length !== sig.length || !crypto.timingSafeEqual(given, sig)) return false;
  try {
    const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString());
    const claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
    return header.alg === 'HS256' && claims.id > 0 && claims.exp > Date.now() / 1000;
  } catch (e) {
    return false;
  }
}

function reply(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

const server = http.createServer((req, res) => {
  if (req.url !== '/ws/sendToAll') return reply(res, 404, { code: 1002, msg: 'not found', data: null });
  if (req.headers['admin-token'] !== adminToken) return reply(res, 200, { code: 1001, msg: '鉴权失败', data: null });
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const form = new URLSearchParams(Buffer.concat(chunks).toString());
    const data = frame(-1, 0, 0, form.get('body') || '测试消息收发');
    // Broadcast as in the ws README: every open, signed-in client.
    let n = 0;
    wss.clients.forEach((client) => {
      if (client.readyState === WebSocket.OPEN && client.signedIn) {
        client.send(data);
        n++;
      }
    });
    reply(res, 200, { code: 0, msg: 'ok', data: { local: n } });
  });
});

const wss = new WebSocketServer({ server, path: '/ws' });

wss.on('connection', (ws) => {
  ws.signedIn = false;
  ws.on('error', () => {});
  ws.on('message', (data) => {
    if (ws.signedIn) return;
    let m;
    try {
      m = JSON.parse(data);
    } catch (e) {
      return ws.send(frame(2, 2, 10, '消息格式错误'));
    }
    if (!m || Number(m.Cmd) !== 3) return ws.send(frame(2, 2, 10, '你还未认证'));
    if (!verifyToken(m.Body)) return ws.send(frame(2, 2, 10, '认证失败'));
    ws.signedIn = true;
    ws.send(frame(4, 2, 10, '认证成功'));
  });
});

// A large backlog, as for the other servers (the default is 511).
server.listen({ host, port, backlog: 4096 }, () => {
  const a = server.address();
  console.log(`listening on ${a.address}:${a.port}`);
});

process.on('SIGTERM', () => process.exit(0));
