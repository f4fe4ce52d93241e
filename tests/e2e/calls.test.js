'use strict';
// Calls from the chat page in real Chromium with a fake camera and microphone: alice calls bob from
// the page, bob accepts in the incoming-call dialog, both connect and receive audio and video, then
// hang up and both timelines show the call. Once on loopback, once relayed only through a real
// coturn with the gateway's TURN credentials; a coturn with another secret lets no call through.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  startServer, launchBrowser, openAs, connect, joinRoom, startCoturn, screenshot,
} = require('./support');

const TURN_SECRET = 'browser-e2e-turn-secret-0123456789';
const TEST_TIMEOUT_MS = 90_000;
const CONNECT_TIMEOUT_MS = 30_000;

// Waits until the page's peer connection to `peer` is connected and both audio and video frames
// have arrived; returns what the page saw.
async function mediaFrom(page, peer) {
  await page.waitForFunction((who) => {
    const state = window.chatPage.calls.state();
    const p = state && state.peers.find((x) => x.userId === who);
    return p && ['connected', 'completed'].includes(p.iceState);
  }, peer, { timeout: CONNECT_TIMEOUT_MS });
  const deadline = Date.now() + CONNECT_TIMEOUT_MS;
  for (;;) {
    const media = await page.evaluate((who) => window.chatPage.calls.media(who), peer);
    if (media && media.framesDecoded > 0 && media.audioPackets > 0 && media.local) return media;
    if (Date.now() > deadline) throw new Error(`no audio and video from ${peer}: ${JSON.stringify(media)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

// Both pages in a room; alice presses Video, bob's dialog rings, bob accepts.
async function placeCall(alice, bob, room) {
  for (const { page } of [alice, bob]) {
    await connect(page);
    await joinRoom(page, room);
  }
  await alice.page.click('#call-video');
  await bob.page.locator('#call-incoming:not([hidden])').waitFor();
  assert.match(await bob.page.textContent('#call-incoming-text'), /alice is calling you \(video call/);
  await bob.page.click('#call-accept');
  await bob.page.locator('#call-incoming[hidden]').waitFor({ state: 'attached' });
  for (const { page } of [alice, bob]) await page.locator('#call-panel:not([hidden])').waitFor();
}

// Alice hangs up; both panels close and both timelines show the call, in its place after the room's
// messages.
async function hangUpAndSeeRecord(alice, bob, room) {
  await alice.page.click('#call-hangup');
  for (const { page } of [alice, bob]) {
    await page.locator('#call-panel[hidden]').waitFor({ state: 'attached' });
    const record = page.locator(`#messages [data-event="chat.call.ended"][data-room="${room}"]`);
    await record.waitFor();
    assert.equal(await record.getAttribute('data-reason'), 'hangup');
    assert.match(await record.textContent(), /Video call · \d+:\d\d · alice, bob/);
  }
}

describe('calls from the page', { timeout: 300_000 }, () => {
  const stops = [];
  let browser;

  before(async () => {
    browser = await launchBrowser({ media: true });
  });

  after(async () => {
    if (browser) await browser.close().catch(() => {});
    for (const stop of stops.reverse()) await stop().catch(() => {});
  });

  async function server(env = {}) {
    const started = await startServer(env);
    stops.push(() => started.stop());
    return started;
  }

  async function users(srv, query = '') {
    const alice = await openAs(browser, srv, 'alice');
    const bob = await openAs(browser, srv, 'bob');
    if (query) {
      for (const { page } of [alice, bob]) {
        await page.goto(`${srv.gatewayUrl}/${query}`);
        await page.locator('#connect').waitFor();
      }
    }
    stops.push(() => alice.context.close(), () => bob.context.close());
    return { alice, bob };
  }

  it('alice calls bob on loopback: both connect, see and hear each other, and the call is recorded', { timeout: TEST_TIMEOUT_MS }, async () => {
    const srv = await server();
    const { alice, bob } = await users(srv);
    try {
      await placeCall(alice, bob, 'e2e-call');
      const bobSeen = await mediaFrom(alice.page, 'bob');
      const aliceSeen = await mediaFrom(bob.page, 'alice');
      assert.deepEqual(bobSeen.remoteKinds, ['audio', 'video']);
      assert.deepEqual(aliceSeen.remoteKinds, ['audio', 'video']);
      // The remote video plays in the panel, one element per peer.
      assert.equal(await alice.page.locator('#call-videos video[data-peer="bob"]').count(), 1);
      assert.equal(await bob.page.locator('#call-videos video[data-peer="alice"]').count(), 1);
      // Mute and camera off act on the local tracks.
      await alice.page.click('#call-mute');
      await alice.page.click('#call-camera');
      assert.equal(await alice.page.getAttribute('#call-mute', 'aria-pressed'), 'true');
      assert.equal(await alice.page.getAttribute('#call-camera', 'aria-pressed'), 'true');
      await screenshot(bob.page, 'call-bob');
      await hangUpAndSeeRecord(alice, bob, 'e2e-call');
      assert.deepEqual([...alice.consoleErrors, ...bob.consoleErrors], []);
    } catch (error) {
      error.message += `\n--- server output ---\n${srv.output()}`;
      throw error;
    }
  });

  it('connects through coturn with relayed candidates only, using the gateway\'s TURN credentials', { timeout: TEST_TIMEOUT_MS }, async () => {
    const coturn = await startCoturn({ secret: TURN_SECRET });
    stops.push(() => coturn.stop());
    const srv = await server({ TURN_URLS: coturn.udpUrl, TURN_SECRET, TURN_TTL_SECS: '600' });
    const { alice, bob } = await users(srv, '?iceTransportPolicy=relay');
    try {
      await placeCall(alice, bob, 'e2e-turn-call');
      for (const [page, peer] of [[alice.page, 'bob'], [bob.page, 'alice']]) {
        const media = await mediaFrom(page, peer);
        assert.deepEqual(media.remoteKinds, ['audio', 'video']);
        assert.deepEqual([media.local, media.remote], ['relay', 'relay'], JSON.stringify(media));
      }
      assert.match(coturn.output(), /ALLOCATE processed, success/);
      await hangUpAndSeeRecord(alice, bob, 'e2e-turn-call');
    } catch (error) {
      error.message += `\n--- coturn output ---\n${coturn.output()}\n--- server output ---\n${srv.output()}`;
      throw error;
    }
  });

  it('does not connect when the TURN server has another secret', { timeout: TEST_TIMEOUT_MS }, async () => {
    const stranger = await startCoturn({ secret: 'another-secret-than-the-gateways-0123' });
    stops.push(() => stranger.stop());
    const srv = await server({ TURN_URLS: stranger.udpUrl, TURN_SECRET, TURN_TTL_SECS: '600' });
    const { alice, bob } = await users(srv, '?iceTransportPolicy=relay');
    try {
      await placeCall(alice, bob, 'e2e-refused-call');
      // Bob offers to alice; with relay only and credentials the relay refuses, gathering ends
      // without a single candidate, and neither side ever connects.
      for (const [page, peer] of [[bob.page, 'alice'], [alice.page, 'bob']]) {
        await page.waitForFunction((who) => {
          const state = window.chatPage.calls.state();
          const p = state && state.peers.find((x) => x.userId === who);
          return p && p.gathering === 'complete';
        }, peer, { timeout: CONNECT_TIMEOUT_MS });
        const state = await page.evaluate(() => window.chatPage.calls.state());
        const p = state.peers.find((x) => x.userId === peer);
        assert.ok(!['connected', 'completed'].includes(p.iceState), JSON.stringify(p));
        assert.ok(p.errors.some((e) => e.code === 401), `expected a 401 from the TURN server: ${JSON.stringify(p)}`);
      }
      assert.match(stranger.output(), /Cannot find credentials of user/);
      await hangUpAndSeeRecord(alice, bob, 'e2e-refused-call');
    } catch (error) {
      error.message += `\n--- coturn output ---\n${stranger.output()}\n--- server output ---\n${srv.output()}`;
      throw error;
    }
  });
});
