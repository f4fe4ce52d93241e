'use strict';
// The chat service on plain Node.js: the `ws` package, in-memory rooms, the
// same wire protocol and internal HTTP API as the Rust service (without
// durable storage: recent history is kept in memory per room).

const http = require('http');
const crypto = require('crypto');
const { WebSocketServer } = require('ws');

const PORT = Number(process.env.PORT || 3102);
const HOST = process.env.HOST || '127.0.0.1';
const INTERNAL_API_KEY = process.env.INTERNAL_API_KEY || '';
const MAX_MESSAGE_CHARS = 4000;
const MAX_ROOMS_PER_CONNECTION = 100;
const MAX_FRAME_BYTES = 64 * 1024;
const HISTORY_PER_ROOM = 100;
const ROOM_ID = /^[A-Za-z0-9_.:-]{1,128}$/;

if (!INTERNAL_API_KEY) {
  console.error('INTERNAL_API_KEY is required');
  process.exit(1);
}

/** roomId -> { members: Set<ws>, seq: number, recent: message data[] } */
const rooms = new Map();

function keyMatches(given) {
  const a = Buffer.from(String(given || ''));
  const b = Buffer.from(INTERNAL_API_KEY);
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

function decodeHeader(value) {
  if (typeof value !== 'string') return '';
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

function frame(event, data) {
  return JSON.stringify({ event, data });
}

function sendError(ws, code, message) {
  ws.send(frame('error', { message, code }));
}

function broadcast(room, payload, except) {
  for (const member of room.members) {
    if (member !== except && member.readyState === member.OPEN) member.send(payload);
  }
}

function leave(ws, roomId) {
  const room = rooms.get(roomId);
  ws.rooms.delete(roomId);
  if (!room) return;
  room.members.delete(ws);
  if (room.members.size === 0) {
    rooms.delete(roomId);
  } else {
    broadcast(room, frame('chat.userLeft', { userId: ws.userId, roomId }));
  }
}

function history(room, before, limit) {
  const older = room.recent.filter((m) => before === undefined || m.seq < before);
  const page = older.slice(-limit);
  return { messages: page, hasMore: older.length > page.length };
}

const handlers = {
  'chat.join'(ws, data) {
    const { roomId } = data;
    if (!ws.rooms.has(roomId) && ws.rooms.size >= MAX_ROOMS_PER_CONNECTION) {
      return sendError(ws, 'too_many_rooms', `at most ${MAX_ROOMS_PER_CONNECTION} rooms per connection`);
    }
    let room = rooms.get(roomId);
    if (!room) {
      room = { members: new Set(), seq: 0, recent: [] };
      rooms.set(roomId, room);
    }
    const reply = { roomId, lastSeq: room.seq };
    let missed = [];
    if (data.since !== undefined) {
      const since = Number(data.since);
      missed = room.recent.filter((m) => m.seq > since);
      const oldest = room.recent.length ? room.recent[0].seq : room.seq + 1;
      reply.recovered = since >= oldest - 1;
    }
    const fresh = !ws.rooms.has(roomId);
    room.members.add(ws);
    ws.rooms.add(roomId);
    ws.send(frame('chat.joined', reply));
    for (const m of missed) ws.send(frame('chat.message', m));
    if (fresh) broadcast(room, frame('chat.userJoined', { userId: ws.userId, roomId }), ws);
  },

  'chat.leave'(ws, data) {
    if (!ws.rooms.has(data.roomId)) return sendError(ws, 'not_in_room', 'not in this room');
    leave(ws, data.roomId);
  },

  'chat.message'(ws, data) {
    const room = rooms.get(data.roomId);
    if (!room || !ws.rooms.has(data.roomId)) return sendError(ws, 'not_in_room', 'not in this room');
    if (typeof data.message !== 'string') return sendError(ws, 'invalid_message', 'message must be a string');
    const text = data.message.trim();
    if (text.length === 0) return sendError(ws, 'invalid_message', 'message is empty');
    if (text.length > MAX_MESSAGE_CHARS) {
      return sendError(ws, 'message_too_long', `at most ${MAX_MESSAGE_CHARS} characters`);
    }
    room.seq += 1;
    const message = {
      roomId: data.roomId,
      userId: ws.userId,
      username: ws.username || data.username || ws.userId,
      message: text,
      timestamp: new Date().toISOString(),
      id: crypto.randomUUID(),
      seq: room.seq,
    };
    room.recent.push(message);
    if (room.recent.length > HISTORY_PER_ROOM) room.recent.shift();
    broadcast(room, frame('chat.message', message));
  },

  'chat.typing'(ws, data) {
    const room = rooms.get(data.roomId);
    if (!room || !ws.rooms.has(data.roomId)) return sendError(ws, 'not_in_room', 'not in this room');
    const payload = frame('chat.typing', {
      userId: ws.userId,
      username: ws.username || data.username || ws.userId,
      isTyping: Boolean(data.isTyping),
      roomId: data.roomId,
    });
    broadcast(room, payload, ws);
  },

  'chat.history'(ws, data) {
    const room = rooms.get(data.roomId);
    if (!room || !ws.rooms.has(data.roomId)) return sendError(ws, 'not_in_room', 'not in this room');
    const limit = Math.min(Math.max(Number(data.limit) || 50, 1), 100);
    const before = data.before === undefined ? undefined : Number(data.before);
    ws.send(frame('chat.history', { roomId: data.roomId, ...history(room, before, limit) }));
  },
};

function onMessage(ws, raw, isBinary) {
  let parsed;
  try {
    parsed = JSON.parse(isBinary ? raw.toString('utf8') : raw);
  } catch {
    return sendError(ws, 'invalid_format', 'Invalid message format');
  }
  if (!parsed || typeof parsed.event !== 'string' || typeof parsed.data !== 'object' || !parsed.data) {
    return sendError(ws, 'invalid_format', 'Invalid message format');
  }
  const handler = handlers[parsed.event];
  if (!handler) return sendError(ws, 'unknown_event', `unknown event ${parsed.event}`);
  if (typeof parsed.data.roomId !== 'string' || !ROOM_ID.test(parsed.data.roomId)) {
    return sendError(ws, 'invalid_room', 'invalid roomId');
  }
  handler(ws, parsed.data);
}

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function connectedUsers() {
  const users = new Set();
  for (const ws of wss.clients) users.add(ws.userId);
  return users.size;
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  if (req.method === 'GET' && url.pathname === '/healthz') return json(res, 200, { status: 'ok' });
  if (!keyMatches(req.headers['x-internal-api-key'])) {
    return json(res, 401, { error: 'invalid internal API key', code: 'unauthorized' });
  }
  if (req.method === 'GET' && url.pathname === '/stats') {
    return json(res, 200, { connectedUsers: connectedUsers(), connections: wss.clients.size, rooms: rooms.size });
  }
  if (req.method === 'POST' && url.pathname === '/send-system-message') {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      let data;
      try {
        data = JSON.parse(body);
      } catch {
        return json(res, 400, { error: 'invalid JSON', code: 'invalid_format' });
      }
      if (typeof data.roomId !== 'string' || !ROOM_ID.test(data.roomId)) {
        return json(res, 400, { error: 'invalid roomId', code: 'invalid_room' });
      }
      const room = rooms.get(data.roomId);
      const payload = frame('chat.system', {
        roomId: data.roomId,
        message: String(data.message || ''),
        timestamp: new Date().toISOString(),
      });
      if (room) broadcast(room, payload);
      json(res, 200, { delivered: room ? room.members.size : 0 });
    });
    return undefined;
  }
  return json(res, 404, { error: 'not found', code: 'not_found' });
});

const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES });

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://localhost');
  const refuse = (status, text, code) => {
    const body = JSON.stringify({ error: text, code });
    socket.end(`HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
  };
  if (url.pathname !== '/ws') return refuse('404 Not Found', 'not found', 'not_found');
  if (!keyMatches(req.headers['x-internal-api-key'])) {
    return refuse('401 Unauthorized', 'invalid internal API key', 'unauthorized');
  }
  const userId = decodeHeader(req.headers['x-user-id']);
  if (!userId || userId.length > 128) return refuse('400 Bad Request', 'x-user-id is required', 'missing_user');
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.userId = userId;
    ws.username = decodeHeader(req.headers['x-username']);
    ws.rooms = new Set();
    ws.isAlive = true;
    ws.on('pong', () => { ws.isAlive = true; });
    ws.on('message', (raw, isBinary) => {
      ws.isAlive = true;
      onMessage(ws, raw, isBinary);
    });
    ws.on('close', () => {
      for (const roomId of [...ws.rooms]) leave(ws, roomId);
    });
    ws.on('error', () => {});
  });
});

// Ping every 30 s; a connection silent for three rounds is dropped.
const heartbeat = setInterval(() => {
  for (const ws of wss.clients) {
    if (!ws.isAlive && (ws.missed = (ws.missed || 0) + 1) >= 3) {
      ws.terminate();
      continue;
    }
    if (ws.isAlive) ws.missed = 0;
    ws.isAlive = false;
    ws.ping();
  }
}, 30000);

server.listen(PORT, HOST, () => console.log(`node chat service on http://${HOST}:${PORT}`));

function shutdown() {
  clearInterval(heartbeat);
  for (const ws of wss.clients) ws.close(1001, 'server shutting down');
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
