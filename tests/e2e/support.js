'use strict';
// Shared plumbing for the browser tests: the all-in-one server, Debian's Chromium, logged-in pages.
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');
const { startCoturn } = require('./coturn');

const REPO_ROOT = path.resolve(__dirname, '..', '..');
const CHAT_BIN = process.env.CHAT_BIN || path.join(REPO_ROOT, 'target', 'debug', 'chat');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARTIFACTS = path.join(__dirname, 'artifacts');
const INTERNAL_API_KEY = 'browser-e2e-internal-key';
const STARTUP_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
const STEP_TIMEOUT_MS = 15_000;

const SERVICE_LINE = /chat-service listening on (http:\/\/127\.0\.0\.1:\d+)/;
const GATEWAY_LINE = /chat-gateway listening on (http:\/\/[^\s]+:\d+)/;

// Starts the all-in-one binary on free ports with dev login enabled (no JWT key in its env) and
// resolves once both listening lines were printed. STUN/TURN settings come only from `extraEnv`.
async function startServer(extraEnv = {}) {
  const env = { ...process.env };
  for (const name of Object.keys(env)) if (/JWT|^(STUN|TURN)_/i.test(name)) delete env[name];
  // Uploaded files go to a directory of this server's own, removed when it stops.
  const fileStore = fs.mkdtempSync(path.join(os.tmpdir(), 'chat-e2e-files-'));
  Object.assign(env, {
    PORT: '0', SERVICE_PORT: '0', HOST: '127.0.0.1',
    INTERNAL_API_KEY, DATABASE_URL: 'memory:', METRICS_ADDR: '', RUST_LOG: env.RUST_LOG || 'warn',
    FILE_STORE_URL: fileStore,
  }, extraEnv);
  if (!fs.existsSync(CHAT_BIN)) throw new Error(`chat binary not found at ${CHAT_BIN} (set CHAT_BIN)`);
  const child = spawn(CHAT_BIN, [], { env, cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const output = [];
  const remember = (chunk) => { output.push(chunk.toString()); if (output.length > 400) output.shift(); };
  child.stderr.on('data', remember);
  const urls = await new Promise((resolve, reject) => {
    let buffered = '';
    let serviceUrl = null;
    let gatewayUrl = null;
    const timer = setTimeout(() => fail(new Error('timed out waiting for the listening lines')), STARTUP_TIMEOUT_MS);
    function fail(error) {
      clearTimeout(timer);
      child.kill('SIGKILL');
      error.message += `\n--- server output ---\n${output.join('')}`;
      reject(error);
    }
    child.on('error', fail);
    child.on('exit', (code, signal) => fail(new Error(`server exited early (code ${code}, signal ${signal})`)));
    child.stdout.on('data', (chunk) => {
      remember(chunk);
      buffered += chunk.toString();
      let newline;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        serviceUrl = serviceUrl || (SERVICE_LINE.exec(line) || [])[1] || null;
        gatewayUrl = gatewayUrl || (GATEWAY_LINE.exec(line) || [])[1] || null;
      }
      if (serviceUrl && gatewayUrl) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        resolve({ serviceUrl, gatewayUrl });
      }
    });
  });
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  return {
    ...urls,
    output: () => output.join(''),
    async stop() {
      process.removeListener('exit', killOnExit);
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
        await exited;
        clearTimeout(timer);
      }
      fs.rmSync(fileStore, { recursive: true, force: true });
    },
  };
}

// `media: true` gives pages a fake camera and microphone (a test pattern and a beep) that
// getUserMedia grants without asking, and lets WebRTC use the loopback interface, where the
// tests' TURN server and both peers live.
async function launchBrowser({ media = false } = {}) {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM} (apt-get install chromium)`);
  const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'];
  if (media) {
    args.push('--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection');
  }
  return chromium.launch({ executablePath: CHROMIUM, timeout: 30_000, args });
}

// A browser context per user: the dev login sets that user's cookie and redirects to the page.
async function openAs(browser, server, user, viewport = { width: 900, height: 720 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
  const dialogs = [];
  page.on('dialog', (dialog) => { dialogs.push(dialog.message()); dialog.dismiss().catch(() => {}); });
  const consoleErrors = [];
  page.on('pageerror', (error) => consoleErrors.push(String(error)));
  await page.goto(`${server.gatewayUrl}/dev/login?user=${encodeURIComponent(user)}`);
  await page.locator('#connect').waitFor();
  return { user, context, page, dialogs, consoleErrors };
}

async function waitForText(page, selector, expected) {
  await page.waitForFunction(([sel, want]) => {
    const node = document.querySelector(sel);
    return node !== null && node.textContent === want;
  }, [selector, expected]);
}

async function connect(page) {
  await page.click('#connect');
  await waitForText(page, '#status', 'Connected');
}

async function joinRoom(page, roomId) {
  await page.fill('#room', roomId);
  await page.click('#join');
  await page.locator(`#tabs .tab[data-room="${roomId}"][data-state="joined"]`).waitFor();
}

async function sendMessage(page, text) {
  await page.fill('#message', text);
  await page.press('#message', 'Enter');
}

// Resolves with the text of every chat.message line of the shown room once `count` are there.
async function waitForMessages(page, roomId, count) {
  const selector = `#messages [data-event="chat.message"][data-room="${roomId}"]`;
  await page.waitForFunction(([sel, n]) => document.querySelectorAll(sel).length >= n, [selector, count]);
  return page.$$eval(`${selector} .text`, (nodes) => nodes.map((n) => n.textContent));
}

async function screenshot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) }).catch(() => {});
}

async function sendSystemMessage(server, roomId, message) {
  const response = await fetch(`${server.serviceUrl}/send-system-message`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-internal-api-key': INTERNAL_API_KEY },
    body: JSON.stringify({ roomId, message }),
    signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
  });
  if (!response.ok) throw new Error(`send-system-message answered ${response.status}: ${await response.text()}`);
  return response.json();
}

// The page's ICE servers, fetched the way a call page would: same origin, the user's cookie.
async function fetchIceServers(page) {
  return page.evaluate(async () => {
    const response = await fetch('/chat/api/rtc/ice-servers');
    if (!response.ok) throw new Error(`ice-servers answered ${response.status}: ${await response.text()}`);
    return {
      cacheControl: response.headers.get('cache-control'),
      iceServers: (await response.json()).iceServers,
    };
  });
}

// The moderation API: deletes any message of a room.
async function moderatorDelete(server, roomId, messageId) {
  const url = `${server.serviceUrl}/rooms/${encodeURIComponent(roomId)}/messages/${encodeURIComponent(messageId)}`;
  const response = await fetch(url, {
    method: 'DELETE',
    headers: { 'x-internal-api-key': INTERNAL_API_KEY },
    signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
  });
  if (!response.ok) throw new Error(`moderation delete answered ${response.status}: ${await response.text()}`);
  return response.json();
}

// The application's say over who is in a private room (the internal API): adds or removes a member.
async function setRoomMember(server, roomId, userId, member) {
  const url = `${server.serviceUrl}/rooms/${encodeURIComponent(roomId)}/members/${encodeURIComponent(userId)}`;
  const response = await fetch(url, {
    method: member ? 'PUT' : 'DELETE',
    headers: { 'x-internal-api-key': INTERNAL_API_KEY },
    signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
  });
  if (!response.ok) throw new Error(`membership change answered ${response.status}: ${await response.text()}`);
  return response.json();
}

// Another tab of the same signed-in user (same browser context, so the same cookie).
async function openTab(session) {
  const page = await session.context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
  page.on('pageerror', (error) => session.consoleErrors.push(String(error)));
  await page.goto(new URL('/', session.page.url()).href);
  await page.locator('#connect').waitFor();
  return page;
}

// Lets a test hide and show a page as a browser does when its tab goes to the background; call
// before the page loads. Pages start visible whatever the headless browser thinks.
async function controlVisibility(page) {
  await page.addInitScript(() => {
    let hidden = false;
    Object.defineProperty(Document.prototype, 'visibilityState', { configurable: true, get: () => (hidden ? 'hidden' : 'visible') });
    Object.defineProperty(Document.prototype, 'hidden', { configurable: true, get: () => hidden });
    window.setPageHidden = (value) => { hidden = value; document.dispatchEvent(new Event('visibilitychange')); };
  });
}
async function setHidden(page, hidden) {
  await page.evaluate((value) => window.setPageHidden(value), hidden);
}

// Every JSON frame the page's sockets send and receive from now on (reloads included), in order;
// `waitFor(predicate)` resolves with the first one that matches, bounded in time.
function recordFrames(page) {
  const frames = [];
  const waiters = new Set();
  const push = (direction, payload) => {
    let parsed;
    try { parsed = JSON.parse(typeof payload === 'string' ? payload : payload.toString()); } catch { return; }
    const frame = { direction, event: parsed && parsed.event, data: (parsed && parsed.data) || {} };
    frames.push(frame);
    for (const waiter of [...waiters]) if (waiter.predicate(frame)) waiter.done(frame);
  };
  page.on('websocket', (ws) => {
    ws.on('framesent', ({ payload }) => push('sent', payload));
    ws.on('framereceived', ({ payload }) => push('received', payload));
  });
  frames.waitFor = (predicate, timeoutMs = STEP_TIMEOUT_MS) => {
    const seen = frames.find(predicate);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const waiter = { predicate };
      const timer = setTimeout(() => { waiters.delete(waiter); reject(new Error('timed out waiting for a frame')); }, timeoutMs);
      waiter.done = (frame) => { clearTimeout(timer); waiters.delete(waiter); resolve(frame); };
      waiters.add(waiter);
    });
  };
  return frames;
}

// The id of the shown room's message line whose text is `text`, once it is there.
async function messageIdOf(page, roomId, text) {
  const handle = await page.waitForFunction(([room, want]) => {
    for (const li of document.querySelectorAll(`#messages [data-event="chat.message"][data-room="${room}"]`)) {
      const node = li.querySelector('.text');
      if (node && node.textContent === want && li.dataset.id) return li.dataset.id;
    }
    return false;
  }, [roomId, text]);
  return handle.jsonValue();
}

// What the shown room's stored lines (messages and system messages) show, in order.
async function roomSnapshot(page, roomId) {
  return page.$$eval(`#messages li[data-room="${roomId}"][data-seq]`, (nodes) => nodes.map((li) => ({
    event: li.dataset.event,
    id: li.dataset.id,
    seq: Number(li.dataset.seq),
    text: li.querySelector('.text') ? li.querySelector('.text').textContent : null,
    own: li.dataset.own === 'true',
    edited: li.dataset.edited === 'true',
    deleted: li.dataset.deleted === 'true',
    reactions: [...li.querySelectorAll('.chip')].map((chip) => ({
      emoji: chip.dataset.emoji, count: Number(chip.dataset.count), mine: chip.dataset.mine === 'true', label: chip.textContent,
    })),
  })));
}

// Waits until a room's tab shows `count` unread (0: no badge).
async function waitForUnread(page, roomId, count) {
  await page.waitForFunction(([room, want]) => {
    const tab = document.querySelector(`#tabs .tab[data-room="${room}"]`);
    if (!tab || tab.dataset.unread !== String(want)) return false;
    const badge = tab.querySelector('.badge');
    return want === 0 ? badge === null : badge !== null && badge.textContent === String(want);
  }, [roomId, count]);
}

module.exports = {
  startServer, launchBrowser, openAs, waitForText, connect, joinRoom, sendMessage, waitForMessages,
  screenshot, sendSystemMessage, startCoturn, fetchIceServers, moderatorDelete, openTab,
  controlVisibility, setHidden, recordFrames, messageIdOf, roomSnapshot, waitForUnread,
  setRoomMember,
};
