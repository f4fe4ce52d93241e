'use strict';
// Two real users in real Chromium against the real all-in-one server: the page's whole chat flow.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  startServer, launchBrowser, openAs, waitForText, connect, joinRoom, sendMessage, waitForMessages,
  screenshot, sendSystemMessage,
} = require('./support');

const TEST_TIMEOUT_MS = 60_000;

describe('chat page', { timeout: 180_000 }, () => {
  let server;
  let browser;
  const opened = [];
  const open = async (user, viewport) => {
    const session = await openAs(browser, server, user, viewport);
    opened.push(session);
    return session;
  };

  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
  });

  after(async () => {
    for (const session of opened) await session.context.close().catch(() => {});
    if (browser) await browser.close().catch(() => {});
    if (server) await server.stop();
  });

  it('lets two users talk, type, see system messages and leave', { timeout: TEST_TIMEOUT_MS }, async () => {
    const alice = await open('alice');
    const bob = await open('bob');
    const room = 'e2e-conversation';
    try {
      await waitForText(alice.page, '#status', 'Disconnected');
      await connect(alice.page);
      await connect(bob.page);
      await joinRoom(alice.page, room);
      await joinRoom(bob.page, room);
      await alice.page.locator(`#messages [data-event="chat.userJoined"][data-room="${room}"]`).first().waitFor();

      await sendMessage(alice.page, 'Hello Bob!');
      assert.deepEqual(await waitForMessages(bob.page, room, 1), ['Hello Bob!']);
      await waitForMessages(alice.page, room, 1);
      const ownLine = alice.page.locator('#messages [data-event="chat.message"]').first();
      assert.equal(await ownLine.getAttribute('data-own'), 'true', 'the echo of our own message is marked as ours');
      const bobSeesAlice = bob.page.locator('#messages [data-event="chat.message"]').first();
      assert.equal(await bobSeesAlice.getAttribute('data-own'), null);
      assert.match(await bobSeesAlice.locator('.who').textContent(), /alice/);

      await bob.page.fill('#message', 'Hi Alice, nice to see you.');
      await bob.page.click('#send');
      assert.deepEqual(await waitForMessages(alice.page, room, 2), ['Hello Bob!', 'Hi Alice, nice to see you.']);
      assert.deepEqual(await waitForMessages(bob.page, room, 2), ['Hello Bob!', 'Hi Alice, nice to see you.']);

      // Typing shows on the other side and clears by itself once bob stops typing.
      await bob.page.locator('#message').pressSequentially('I am typ', { delay: 30 });
      await waitForText(alice.page, '#typing', 'bob is typing…');
      await alice.page.waitForFunction(() => document.querySelector('#typing').textContent === '', null, { timeout: 8000 });
      await bob.page.fill('#message', '');

      // Typing clears at once when the message is sent.
      await bob.page.locator('#message').pressSequentially('Sending now', { delay: 20 });
      await waitForText(alice.page, '#typing', 'bob is typing…');
      await bob.page.press('#message', 'Enter');
      await waitForMessages(alice.page, room, 3);
      await waitForText(alice.page, '#typing', '');

      const delivered = await sendSystemMessage(server, room, 'Maintenance in 5 minutes');
      assert.equal(delivered.delivered, 2);
      for (const { page } of [alice, bob]) {
        const line = page.locator(`#messages [data-event="chat.system"][data-room="${room}"]`);
        await line.waitFor();
        assert.match(await line.textContent(), /Maintenance in 5 minutes/);
      }

      const payload = '<img src=x onerror=alert(1)>';
      await sendMessage(alice.page, payload);
      const bobTexts = await waitForMessages(bob.page, room, 4);
      assert.equal(bobTexts[3], payload, 'HTML arrives as literal text');
      assert.equal(await bob.page.locator('#messages img').count(), 0);
      assert.equal(await alice.page.locator('#messages img').count(), 0);

      await bob.page.click('#leave');
      await bob.page.locator(`#tabs .tab[data-room="${room}"]`).waitFor({ state: 'detached' });
      const left = alice.page.locator(`#messages [data-event="chat.userLeft"][data-room="${room}"]`);
      await left.waitFor();
      assert.match(await left.textContent(), /bob left/);

      assert.deepEqual(alice.dialogs, [], 'no script from a message ran');
      assert.deepEqual(bob.dialogs, []);
      assert.deepEqual([...alice.consoleErrors, ...bob.consoleErrors], []);
    } finally {
      await screenshot(alice.page, 'conversation-alice');
      await screenshot(bob.page, 'conversation-bob');
    }
  });

  it('shows server errors to the user', { timeout: TEST_TIMEOUT_MS }, async () => {
    const carol = await open('carol');
    try {
      await connect(carol.page);
      await carol.page.fill('#room', 'not a valid room!');
      await carol.page.click('#join');
      const error = carol.page.locator('#messages [data-event="error"]');
      await error.waitFor();
      assert.match(await error.textContent(), /invalid_room/);
      await screenshot(carol.page, 'errors-invalid-room');
      await carol.page.locator('#tabs .tab').first().waitFor({ state: 'detached' });
      await waitForText(carol.page, '#status', 'Connected');

      await joinRoom(carol.page, 'e2e-errors');
      await sendMessage(carol.page, 'still works after an error');
      assert.deepEqual(await waitForMessages(carol.page, 'e2e-errors', 1), ['still works after an error']);
    } finally {
      await screenshot(carol.page, 'errors');
    }
  });

  it('explains a failed connection when not signed in', { timeout: TEST_TIMEOUT_MS }, async () => {
    const context = await browser.newContext();
    opened.push({ context });
    const page = await context.newPage();
    page.setDefaultTimeout(15_000);
    try {
      await page.goto(`${server.gatewayUrl}/chat-test.html`);
      await page.click('#connect');
      await page.locator('#messages [data-event="client.notice"]').waitFor();
      assert.match(await page.locator('#messages [data-event="client.notice"]').textContent(), /Sign in/);
      await waitForText(page, '#status', 'Disconnected');
    } finally {
      await screenshot(page, 'not-signed-in');
    }
  });

  it('keeps a separate list per room and counts unread messages', { timeout: TEST_TIMEOUT_MS }, async () => {
    const dave = await open('dave');
    const erin = await open('erin');
    try {
      await connect(dave.page);
      await connect(erin.page);
      await joinRoom(dave.page, 'e2e-room-a');
      await joinRoom(dave.page, 'e2e-room-b');
      await joinRoom(erin.page, 'e2e-room-a');
      await joinRoom(erin.page, 'e2e-room-b');

      await sendMessage(erin.page, 'only in room b');
      await waitForMessages(dave.page, 'e2e-room-b', 1);
      await erin.page.click('#tabs .tab[data-room="e2e-room-a"]');
      await sendMessage(erin.page, 'only in room a');
      await waitForMessages(erin.page, 'e2e-room-a', 1);

      const unread = dave.page.locator('#tabs .tab[data-room="e2e-room-a"] .badge');
      await waitForText(dave.page, '#tabs .tab[data-room="e2e-room-a"] .badge', '1');
      assert.equal(await unread.textContent(), '1');
      assert.deepEqual(await waitForMessages(dave.page, 'e2e-room-b', 1), ['only in room b']);

      await dave.page.click('#tabs .tab[data-room="e2e-room-a"]');
      assert.deepEqual(await waitForMessages(dave.page, 'e2e-room-a', 1), ['only in room a']);
      assert.equal(await dave.page.locator('#messages [data-room="e2e-room-b"]').count(), 0);
      assert.equal(await unread.count(), 0);
    } finally {
      await screenshot(dave.page, 'rooms');
    }
  });

  it('is usable from the keyboard at phone width', { timeout: TEST_TIMEOUT_MS }, async () => {
    const frank = await open('frank', { width: 375, height: 700 });
    try {
      await frank.page.focus('#connect');
      await frank.page.keyboard.press('Enter');
      await waitForText(frank.page, '#status', 'Connected');
      await frank.page.focus('#room');
      await frank.page.keyboard.type('e2e-phone');
      await frank.page.keyboard.press('Enter');
      await frank.page.locator('#tabs .tab[data-room="e2e-phone"][data-state="joined"]').waitFor();
      await frank.page.focus('#message');
      await frank.page.keyboard.type('typed on a small screen');
      await frank.page.keyboard.press('Enter');
      await waitForMessages(frank.page, 'e2e-phone', 1);
      const overflow = await frank.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `no horizontal scrolling at 375 px (overflow ${overflow}px)`);
      for (const id of ['connect', 'disconnect', 'room', 'join', 'leave', 'message', 'send']) {
        const box = await frank.page.locator(`#${id}`).boundingBox();
        assert.ok(box && box.x >= 0 && box.x + box.width <= 375, `#${id} fits on screen`);
      }
      const unlabelled = await frank.page.$$eval('input, textarea', (nodes) => nodes
        .filter((n) => !(n.labels && n.labels.length) && !n.getAttribute('aria-label')).map((n) => n.id));
      assert.deepEqual(unlabelled, []);

      await frank.page.click('#disconnect');
      await waitForText(frank.page, '#status', 'Disconnected');
    } finally {
      await screenshot(frank.page, 'phone');
    }
  });
});
