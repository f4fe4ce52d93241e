'use strict';
// Calls' network path in real Chromium: two pages fetch their ICE servers from the gateway and
// connect audio and video through a real coturn, relayed only (iceTransportPolicy "relay"), with
// the credentials the gateway minted. A coturn with another secret refuses them.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, launchBrowser, openAs, startCoturn, fetchIceServers } = require('./support');

const TURN_SECRET = 'browser-e2e-turn-secret-0123456789';
const TEST_TIMEOUT_MS = 60_000;
const CONNECT_TIMEOUT_MS = 30_000;

// In the page: a relay-only peer connection with the fake camera and microphone, and a record of
// what ICE does, in `window.rtcTest`.
async function preparePeer(page, iceServers) {
  await page.evaluate(async (servers) => {
    const pc = new RTCPeerConnection({ iceServers: servers, iceTransportPolicy: 'relay' });
    const state = { pc, candidates: [], gathered: false, errors: [], remoteKinds: [] };
    window.rtcTest = state;
    pc.addEventListener('icecandidate', (event) => {
      if (event.candidate) state.candidates.push(event.candidate.toJSON());
      else state.gathered = true;
    });
    pc.addEventListener('icecandidateerror', (event) => {
      state.errors.push({ url: event.url, code: event.errorCode, text: event.errorText });
    });
    pc.addEventListener('track', (event) => state.remoteKinds.push(event.track.kind));
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    for (const track of stream.getTracks()) pc.addTrack(track, stream);
  }, iceServers);
}

async function createOffer(page) {
  return page.evaluate(async () => {
    const offer = await window.rtcTest.pc.createOffer();
    await window.rtcTest.pc.setLocalDescription(offer);
    return { type: offer.type, sdp: offer.sdp };
  });
}

async function answer(page, offer) {
  return page.evaluate(async (remote) => {
    await window.rtcTest.pc.setRemoteDescription(remote);
    const local = await window.rtcTest.pc.createAnswer();
    await window.rtcTest.pc.setLocalDescription(local);
    return { type: local.type, sdp: local.sdp };
  }, offer);
}

// Every candidate the page gathered, once gathering is complete.
async function gatheredCandidates(page) {
  await page.waitForFunction(() => window.rtcTest.gathered, null, { timeout: CONNECT_TIMEOUT_MS });
  return page.evaluate(() => window.rtcTest.candidates);
}

async function addCandidates(page, candidates) {
  await page.evaluate(async (list) => {
    for (const candidate of list) await window.rtcTest.pc.addIceCandidate(candidate);
  }, candidates);
}

// What was received and over which pair, once ICE is connected and audio and video frames arrive.
async function mediaArrived(page) {
  await page.waitForFunction(() => ['connected', 'completed'].includes(window.rtcTest.pc.iceConnectionState),
    null, { timeout: CONNECT_TIMEOUT_MS });
  return page.evaluate(async (timeoutMs) => {
    const deadline = Date.now() + timeoutMs;
    let seen = null;
    for (;;) {
      const stats = [...(await window.rtcTest.pc.getStats()).values()];
      const inbound = (kind) => stats.find((s) => s.type === 'inbound-rtp' && s.kind === kind) || {};
      const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
      const pair = transport && stats.find((s) => s.id === transport.selectedCandidatePairId);
      const candidateType = (id) => (stats.find((s) => s.id === id) || {}).candidateType || null;
      seen = {
        iceState: window.rtcTest.pc.iceConnectionState,
        remoteKinds: [...window.rtcTest.remoteKinds].sort(),
        framesDecoded: inbound('video').framesDecoded || 0,
        audioPackets: inbound('audio').packetsReceived || 0,
        local: pair ? candidateType(pair.localCandidateId) : null,
        remote: pair ? candidateType(pair.remoteCandidateId) : null,
      };
      if (seen.framesDecoded > 0 && seen.audioPackets > 0 && seen.local) return seen;
      if (Date.now() > deadline) throw new Error(`no audio and video arrived: ${JSON.stringify(seen)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }, CONNECT_TIMEOUT_MS);
}

function assertRelayOnly(candidates, who) {
  assert.ok(candidates.length > 0, `${who} gathered no candidates`);
  for (const { candidate } of candidates) assert.match(candidate, / typ relay /, `${who}: ${candidate}`);
}

describe('calls through TURN', { timeout: 180_000 }, () => {
  const stops = [];
  let browser;

  before(async () => {
    browser = await launchBrowser({ media: true });
  });

  after(async () => {
    if (browser) await browser.close().catch(() => {});
    for (const stop of stops.reverse()) await stop().catch(() => {});
  });

  async function serverWithTurn(coturn) {
    const server = await startServer({ TURN_URLS: coturn.udpUrl, TURN_SECRET, TURN_TTL_SECS: '600' });
    stops.push(() => server.stop());
    return server;
  }

  it('connects audio and video between two pages over relayed candidates only', { timeout: TEST_TIMEOUT_MS }, async () => {
    const coturn = await startCoturn({ secret: TURN_SECRET });
    stops.push(() => coturn.stop());
    const server = await serverWithTurn(coturn);
    // A user id with a colon, a quote, a space and non-ASCII: coturn takes it encoded.
    const alice = await openAs(browser, server, 'alice');
    const bob = await openAs(browser, server, "o'brien: 李雷");
    try {
      const servers = [];
      for (const { page } of [alice, bob]) {
        const fetched = await fetchIceServers(page);
        assert.equal(fetched.cacheControl, 'no-store');
        assert.equal(fetched.iceServers.length, 1, JSON.stringify(fetched.iceServers));
        const [turn] = fetched.iceServers;
        assert.deepEqual(turn.urls, [coturn.udpUrl]);
        assert.match(turn.username, /^\d+:\S+$/);
        assert.ok(turn.credential);
        servers.push(fetched.iceServers);
      }
      assert.notEqual(servers[0][0].username, servers[1][0].username, 'credentials are per user');

      await preparePeer(alice.page, servers[0]);
      await preparePeer(bob.page, servers[1]);
      const offer = await createOffer(alice.page);
      const reply = await answer(bob.page, offer);
      await alice.page.evaluate(async (remote) => window.rtcTest.pc.setRemoteDescription(remote), reply);

      const aliceCandidates = await gatheredCandidates(alice.page);
      const bobCandidates = await gatheredCandidates(bob.page);
      assertRelayOnly(aliceCandidates, 'alice');
      assertRelayOnly(bobCandidates, 'bob');
      await addCandidates(bob.page, aliceCandidates);
      await addCandidates(alice.page, bobCandidates);

      for (const { page, user } of [alice, bob]) {
        const media = await mediaArrived(page);
        assert.deepEqual(media.remoteKinds, ['audio', 'video'], `${user}: ${JSON.stringify(media)}`);
        assert.deepEqual([media.local, media.remote], ['relay', 'relay'], `${user}: ${JSON.stringify(media)}`);
      }
      assert.match(coturn.output(), /ALLOCATE processed, success/);
    } catch (error) {
      error.message += `\n--- coturn output ---\n${coturn.output()}\n--- server output ---\n${server.output()}`;
      throw error;
    } finally {
      await alice.context.close().catch(() => {});
      await bob.context.close().catch(() => {});
    }
  });

  it('gathers no relay candidates when the TURN server has another secret', { timeout: TEST_TIMEOUT_MS }, async () => {
    const stranger = await startCoturn({ secret: 'another-secret-than-the-gateways-0123' });
    stops.push(() => stranger.stop());
    const server = await serverWithTurn(stranger);
    const carol = await openAs(browser, server, 'carol');
    try {
      const { iceServers } = await fetchIceServers(carol.page);
      await preparePeer(carol.page, iceServers);
      await createOffer(carol.page);
      // Gathering ends (bounded by the wait) without a single candidate: the relay said no.
      assert.deepEqual(await gatheredCandidates(carol.page), []);
      const errors = await carol.page.evaluate(() => window.rtcTest.errors);
      assert.ok(errors.some((e) => e.code === 401), `expected a 401 from the TURN server: ${JSON.stringify(errors)}`);
      const [turn] = iceServers;
      assert.ok(stranger.output().includes(`Cannot find credentials of user <${turn.username}>`),
        'coturn refused these credentials');
    } catch (error) {
      error.message += `\n--- coturn output ---\n${stranger.output()}\n--- server output ---\n${server.output()}`;
      throw error;
    } finally {
      await carol.context.close().catch(() => {});
    }
  });
});
