'use strict';
// The gateway on plain Node.js: verifies the `access_token` cookie (HS256
// JWT), checks the Origin when ALLOWED_ORIGINS is set, and relays every
// WebSocket frame between the browser and the chat service's /ws.

const http = require('http');
const jwt = require('jsonwebtoken');
const WebSocket = require('ws');

const PORT = Number(process.env.PORT || process.env.GATEWAY_PORT || 3100);
const HOST = process.env.HOST || '127.0.0.1';
const JWT_SECRET = process.env.JWT_SECRET || '';
const INTERNAL_API_KEY = process.env.INTERNAL_API_KEY || '';
const CHAT_SERVICE_URL = (process.env.CHAT_SERVICE_URL || 'http://127.0.0.1:3102').replace(/\/$/, '');
const ALLOWED_ORIGINS = (process.env.ALLOWED_ORIGINS || '').split(',').map((o) => o.trim()).filter(Boolean);
const MAX_FRAME_BYTES = 64 * 1024;

if (!JWT_SECRET || !INTERNAL_API_KEY) {
  console.error('JWT_SECRET and INTERNAL_API_KEY are required');
  process.exit(1);
}

const upstreamUrl = `${CHAT_SERVICE_URL.replace(/^http/, 'ws')}/ws`;

function cookie(header, name) {
  for (const part of (header || '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return decodeURIComponent(part.slice(eq + 1).trim());
  }
  return undefined;
}

function refuse(socket, status, message, code) {
  const body = JSON.stringify({ error: message, code });
  socket.end(`HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
}

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end('{"status":"ok"}');
  }
  res.writeHead(404, { 'content-type': 'application/json' });
  return res.end('{"error":"not found","code":"not_found"}');
});

const wss = new WebSocket.Server({ noServer: true, maxPayload: MAX_FRAME_BYTES });

server.on('upgrade', (req, socket, head) => {
  const path = req.url.split('?')[0];
  if (path !== '/chat/ws') return refuse(socket, '404 Not Found', 'not found', 'not_found');
  const origin = req.headers.origin;
  if (origin && ALLOWED_ORIGINS.length && !ALLOWED_ORIGINS.includes(origin)) {
    return refuse(socket, '403 Forbidden', 'origin not allowed', 'forbidden_origin');
  }
  let claims;
  try {
    claims = jwt.verify(cookie(req.headers.cookie, 'access_token') || '', JWT_SECRET, { algorithms: ['HS256'] });
  } catch {
    return refuse(socket, '401 Unauthorized', 'authentication required', 'unauthorized');
  }
  const userId = String(claims.sub || claims.userId || claims.id || '');
  if (!userId) return refuse(socket, '401 Unauthorized', 'token has no subject', 'unauthorized');
  const username = String(claims.username || userId);

  wss.handleUpgrade(req, socket, head, (client) => relay(client, userId, username));
});

function relay(client, userId, username) {
  const upstream = new WebSocket(upstreamUrl, {
    perMessageDeflate: false,
    maxPayload: MAX_FRAME_BYTES,
    headers: {
      'x-internal-api-key': INTERNAL_API_KEY,
      'x-user-id': encodeURIComponent(userId),
      'x-username': encodeURIComponent(username),
    },
  });
  const pending = [];

  client.on('message', (data, isBinary) => {
    if (upstream.readyState === WebSocket.OPEN) upstream.send(data, { binary: isBinary });
    else if (upstream.readyState === WebSocket.CONNECTING) pending.push([data, isBinary]);
  });
  upstream.on('open', () => {
    for (const [data, isBinary] of pending.splice(0)) upstream.send(data, { binary: isBinary });
  });
  upstream.on('message', (data, isBinary) => {
    if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
  });

  const closeCode = (code) => (code >= 1000 && code < 5000 && code !== 1005 && code !== 1006 ? code : 1011);
  client.on('close', (code) => {
    if (upstream.readyState === WebSocket.OPEN) upstream.close(closeCode(code));
    else upstream.terminate();
  });
  upstream.on('close', (code) => {
    if (client.readyState === WebSocket.OPEN) client.close(closeCode(code));
  });
  upstream.on('error', () => {
    if (client.readyState === WebSocket.OPEN) client.close(1011, 'chat service unavailable');
  });
  client.on('error', () => upstream.terminate());
}

server.listen(PORT, HOST, () => console.log(`node gateway on http://${HOST}:${PORT} -> ${upstreamUrl}`));

function shutdown() {
  for (const ws of wss.clients) ws.close(1001, 'server shutting down');
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
