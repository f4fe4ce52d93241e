'use strict';
// A real TURN server for the browser tests: Debian's coturn on 127.0.0.1, one per caller on a
// free port, checking time-limited credentials against a shared secret (`use-auth-secret`), the
// way the gateway's TURN_SECRET is meant to be deployed.
const { spawn } = require('node:child_process');
const dgram = require('node:dgram');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const REALM = 'chat.test';
const READY_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 5_000;
const KEPT_LINES = 2000;

function findOnPath(name) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    const candidate = path.join(dir, name);
    if (dir && fs.existsSync(candidate)) return candidate;
  }
  return null;
}

function turnserverBinary() {
  const binary = findOnPath('turnserver');
  if (!binary) throw new Error('needs coturn: `turnserver` is not on PATH (apt-get install coturn)');
  return binary;
}

// A port free for both UDP and TCP on 127.0.0.1: coturn listens on both.
async function freePort() {
  for (let attempt = 0; attempt < 100; attempt += 1) {
    const udp = dgram.createSocket('udp4');
    await new Promise((resolve, reject) => { udp.once('error', reject); udp.bind(0, '127.0.0.1', resolve); });
    const { port } = udp.address();
    const tcp = net.createServer();
    const free = await new Promise((resolve) => {
      tcp.once('error', () => resolve(false));
      tcp.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (free) await new Promise((resolve) => tcp.close(resolve));
    await new Promise((resolve) => udp.close(resolve));
    if (free) return port;
  }
  throw new Error('no port free for both UDP and TCP on 127.0.0.1');
}

// Everything on the command line and no config file, so /etc/turnserver.conf plays no part.
// No fixed ports (TLS 5349, CLI 5766, RFC 5780's second port) that two servers would fight over;
// relays on 127.0.0.1 and loopback peers allowed, since both browsers are on this host.
function coturnArgs(port, secret, dir) {
  return [
    '-n', '--listening-ip=127.0.0.1', '--relay-ip=127.0.0.1', `--listening-port=${port}`,
    '--use-auth-secret', `--static-auth-secret=${secret}`, `--realm=${REALM}`,
    '--no-tls', '--no-dtls', '--no-cli', '--no-rfc5780', '--allow-loopback-peers',
    // Verbose is what logs the listeners opening, the readiness signal.
    '--log-file=stdout', '--verbose',
    `--pidfile=${path.join(dir, 'turnserver.pid')}`, `--db=${path.join(dir, 'turndb')}`,
  ];
}

// Starts coturn with `static-auth-secret = secret`; resolves once its UDP and TCP listeners are
// open. `stop()` kills it. `udpUrl` / `tcpUrl` are what TURN_URLS takes.
async function startCoturn({ secret }) {
  if (!secret) throw new Error('startCoturn needs the shared secret');
  const binary = turnserverBinary();
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chat-e2e-coturn-'));
  const child = spawn(binary, coturnArgs(port, secret, dir), { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  const address = `127.0.0.1:${port}`;
  let udp = false;
  let tcp = false;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`coturn did not open its listeners on ${address} in time`)),
      READY_TIMEOUT_MS);
    function fail(error) {
      clearTimeout(timer);
      child.kill('SIGKILL');
      error.message += `\n--- coturn output ---\n${lines.join('\n')}`;
      reject(error);
    }
    child.on('error', fail);
    child.on('exit', (code, signal) => fail(new Error(`coturn exited early (code ${code}, signal ${signal})`)));
    for (const stream of [child.stdout, child.stderr]) {
      let buffered = '';
      stream.on('data', (chunk) => {
        buffered += chunk.toString();
        let newline;
        while ((newline = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          lines.push(line);
          if (lines.length > KEPT_LINES) lines.shift();
          if (line.includes(address)) {
            udp = udp || line.includes('UDP listener opened');
            tcp = tcp || line.includes('TCP listener opened');
          }
        }
        if (udp && tcp) {
          clearTimeout(timer);
          child.removeAllListeners('exit');
          resolve();
        }
      });
    }
  });
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  return {
    port,
    realm: REALM,
    udpUrl: `turn:127.0.0.1:${port}?transport=udp`,
    tcpUrl: `turn:127.0.0.1:${port}?transport=tcp`,
    output: () => lines.join('\n'),
    async stop() {
      process.removeListener('exit', killOnExit);
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
        await exited;
        clearTimeout(timer);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

module.exports = { startCoturn, turnserverBinary };
