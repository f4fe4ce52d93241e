'use strict';
// The page's people panel between real users on the real server: direct conversations opened by
// user id and arriving unread, members-only rooms a third user cannot read, presence (away while
// hidden, no offline flap on a reload, offline with a last-seen time), room members, and removal
// from a private room.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  startServer, launchBrowser, openAs, waitForText, connect, joinRoom, sendMessage, waitForMessages,
  screenshot, controlVisibility, setHidden, recordFrames, setRoomMember,
} = require('./support');

const TEST_TIMEOUT_MS = 90_000;
// The service announces offline 5 s after a user's last connection closed; this bounds the wait.
const OFFLINE_WAIT_MS = 15_000;

const personSelector = (list, userId) => `#people-${list} li.person[data-person="${userId}"]`;

// Waits until the person's row in `list` ('dms' or 'room') matches: `status`, `unread`, and text
// its status or preview line contains.
async function waitForPerson(page, list, userId, want, timeout) {
  await page.waitForFunction(([sel, w]) => {
    const li = document.querySelector(sel);
    if (!li) return false;
    if (w.status !== undefined && li.dataset.status !== w.status) return false;
    if (w.unread !== undefined) {
      const badge = li.querySelector('.badge');
      if (li.dataset.unread !== String(w.unread)) return false;
      if (w.unread > 0 ? badge.hidden || badge.textContent !== String(w.unread) : !badge.hidden) return false;
    }
    if (w.statusText !== undefined && !li.querySelector('.person-status').textContent.includes(w.statusText)) return false;
    if (w.preview !== undefined && li.querySelector('.person-preview').textContent !== w.preview) return false;
    return true;
  }, [personSelector(list, userId), want], timeout === undefined ? {} : { timeout });
}

async function waitForError(page, code, count = 1) {
  await page.waitForFunction(([want, n]) => [...document.querySelectorAll('#messages [data-event="error"] code')]
    .filter((node) => node.textContent === want).length >= n, [code, count]);
}

// Opens the direct conversation with `userId` from the panel's input; resolves with its room id
// once its tab is joined.
async function openDmByUserId(page, userId) {
  await page.fill('#dm-user', userId);
  await page.click('#dm-open');
  const tab = page.locator(`#tabs .tab[data-dm="${userId}"][data-state="joined"]`);
  await tab.waitFor();
  return tab.getAttribute('data-room');
}

describe('people: direct messages, presence and members', { timeout: 400_000 }, () => {
  let server;
  let browser;
  const opened = [];
  const open = async (user) => {
    const session = await openAs(browser, server, user);
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

  it('opens a conversation by user id; the other side sees it arrive unread, opens it and answers', { timeout: TEST_TIMEOUT_MS }, async () => {
    const alice = await open('alice');
    const bob = await open('bob');
    try {
      await connect(bob.page);
      await joinRoom(bob.page, 'e2e-people-lobby');
      await connect(alice.page);

      const dmRoom = await openDmByUserId(alice.page, 'bob');
      assert.match(dmRoom, /^dm:/);
      assert.equal(await alice.page.textContent(`#tabs .tab[data-room="${dmRoom}"]`), '@bob', 'the tab is named after bob');
      await waitForPerson(alice.page, 'dms', 'bob', { status: 'online' });
      const first = 'hi bob <img src=x onerror=alert(1)> & <b>not bold</b>';
      await sendMessage(alice.page, first);
      await waitForMessages(alice.page, dmRoom, 1);

      // Bob, in another room, sees the conversation arrive with one unread, as plain text.
      await waitForPerson(bob.page, 'dms', 'alice', { unread: 1, status: 'online', preview: first });
      await waitForText(bob.page, `${personSelector('dms', 'alice')} .person-name`, 'alice');
      assert.equal(await bob.page.title(), '(1) Chat');
      assert.equal(await bob.page.locator(`#tabs .tab[data-room="${dmRoom}"]`).count(), 0, 'not opened by itself');
      assert.equal(await bob.page.locator('#people img, #people b').count(), 0, 'no markup from the wire');

      // Opening it joins it and shows the history; reading it clears the count.
      await bob.page.click(`${personSelector('dms', 'alice')} .person-main`);
      await bob.page.locator(`#tabs .tab[data-room="${dmRoom}"][data-state="joined"]`).waitFor();
      assert.equal(await bob.page.textContent(`#tabs .tab[data-room="${dmRoom}"]`), '@alice');
      assert.deepEqual(await waitForMessages(bob.page, dmRoom, 1), [first]);
      await waitForPerson(bob.page, 'dms', 'alice', { unread: 0 });
      assert.equal(await bob.page.title(), 'Chat');
      await sendMessage(bob.page, 'hi alice');
      assert.deepEqual(await waitForMessages(alice.page, dmRoom, 2), [first, 'hi alice']);
      await waitForPerson(alice.page, 'dms', 'bob', { unread: 0, preview: 'hi alice' });
      // The conversation's members are the two of them.
      await waitForPerson(alice.page, 'room', 'bob', { status: 'online' });
      await waitForPerson(alice.page, 'room', 'alice', {});

      // Closed again, the conversation counts what arrives; a fresh page has it from chat.dm.list.
      await bob.page.click('#leave');
      await bob.page.locator(`#tabs .tab[data-room="${dmRoom}"]`).waitFor({ state: 'detached' });
      await sendMessage(alice.page, 'one more');
      await waitForPerson(bob.page, 'dms', 'alice', { unread: 1, preview: 'one more' });
      await bob.page.reload();
      await connect(bob.page);
      await waitForPerson(bob.page, 'dms', 'alice', { unread: 1, preview: 'one more' });
      assert.equal(await bob.page.title(), '(1) Chat');
      await joinRoom(bob.page, 'e2e-people-lobby');

      // Messaging someone from the room's member list opens the same conversation.
      await alice.page.click('#leave');
      await alice.page.locator(`#tabs .tab[data-room="${dmRoom}"]`).waitFor({ state: 'detached' });
      await joinRoom(alice.page, 'e2e-people-lobby');
      await waitForPerson(alice.page, 'room', 'bob', { status: 'online' });
      await alice.page.click(`${personSelector('room', 'bob')} [data-action="message"].person-message`);
      await alice.page.locator(`#tabs .tab[data-room="${dmRoom}"][data-state="joined"][aria-current="true"]`).waitFor();
      assert.deepEqual(await waitForMessages(alice.page, dmRoom, 3), [first, 'hi alice', 'one more']);

      for (const session of [alice, bob]) {
        assert.deepEqual(session.dialogs, []);
        assert.deepEqual(session.consoleErrors, []);
      }
    } finally {
      await screenshot(alice.page, 'people-alice');
      await screenshot(bob.page, 'people-bob');
    }
  });

  it('keeps a conversation from a third user: join refused, history over HTTP 403', { timeout: TEST_TIMEOUT_MS }, async () => {
    const ann = await open('ann');
    const ben = await open('ben');
    const carol = await open('carol');
    const carolFrames = recordFrames(carol.page);
    try {
      await connect(ann.page);
      await connect(ben.page);
      const dmRoom = await openDmByUserId(ann.page, 'ben');
      await sendMessage(ann.page, 'only for ben');
      await waitForMessages(ann.page, dmRoom, 1);
      await waitForPerson(ben.page, 'dms', 'ann', { unread: 1 });

      await connect(carol.page);
      await carolFrames.waitFor((f) => f.direction === 'received' && f.event === 'chat.dm.list');
      assert.equal(await carol.page.locator('#people-dms li.person').count(), 0, 'carol has no conversations');

      // Through the page's own join: refused, and the tab goes away.
      await carol.page.fill('#room', dmRoom);
      await carol.page.click('#join');
      await waitForError(carol.page, 'forbidden');
      await carol.page.locator(`#tabs .tab[data-room="${dmRoom}"]`).waitFor({ state: 'detached' });
      // A forged join asking for a replay, and a forged member list: refused alike.
      assert.ok(await carol.page.evaluate((roomId) => window.chatPage.send('chat.join', { roomId, since: 0 }), dmRoom));
      await waitForError(carol.page, 'forbidden', 2);
      assert.ok(await carol.page.evaluate((roomId) => window.chatPage.send('chat.members', { roomId }), dmRoom));
      await waitForError(carol.page, 'forbidden', 3);
      await waitForText(carol.page, '#status', 'Connected');

      const answers = await carol.page.evaluate(async (roomId) => {
        const out = {};
        for (const what of ['messages', 'receipts']) {
          const response = await fetch(`/chat/api/rooms/${encodeURIComponent(roomId)}/${what}`);
          out[what] = { status: response.status, body: await response.json() };
        }
        return out;
      }, dmRoom);
      assert.equal(answers.messages.status, 403);
      assert.equal(answers.messages.body.code, 'forbidden');
      assert.equal(answers.receipts.status, 403);
      assert.equal(answers.receipts.body.code, 'forbidden');

      const leaked = carolFrames.filter((f) => f.direction === 'received' && JSON.stringify(f.data).includes('only for ben'));
      assert.deepEqual(leaked, []);
      assert.ok(!(await carol.page.evaluate(() => document.body.textContent.includes('only for ben'))));
      assert.deepEqual(carol.consoleErrors, []);
    } finally {
      await screenshot(carol.page, 'people-carol');
    }
  });

  it('shows away while hidden, no offline on a reload, offline with a last-seen time after closing', { timeout: TEST_TIMEOUT_MS }, async () => {
    const wendy = await open('wendy');
    const victor = await open('victor');
    const zoe = await open('zoe');
    const wendyFrames = recordFrames(wendy.page);
    const victorFrames = recordFrames(victor.page);
    await controlVisibility(victor.page);
    await victor.page.reload();
    await victor.page.locator('#connect').waitFor();
    try {
      await connect(wendy.page);
      await connect(zoe.page);
      // Hidden when it connects: away from the start.
      await setHidden(victor.page, true);
      await connect(victor.page);
      await victorFrames.waitFor((f) => f.direction === 'sent' && f.event === 'chat.status' && f.data.status === 'away');

      await openDmByUserId(wendy.page, 'victor');
      await waitForPerson(wendy.page, 'dms', 'victor', { status: 'away', statusText: 'away' });
      await setHidden(victor.page, false);
      await waitForPerson(wendy.page, 'dms', 'victor', { status: 'online', statusText: 'online' });
      await setHidden(victor.page, true);
      await waitForPerson(wendy.page, 'dms', 'victor', { status: 'away' });
      await setHidden(victor.page, false);
      await waitForPerson(wendy.page, 'dms', 'victor', { status: 'online' });
      await openDmByUserId(wendy.page, 'zoe');
      await waitForPerson(wendy.page, 'dms', 'zoe', { status: 'online' });

      // A reload within the grace period: never announced offline. Zoe leaves after victor's old
      // socket closed, so once wendy sees zoe offline, victor's grace period is over too.
      const mark = wendyFrames.length;
      await victor.page.reload();
      await connect(victor.page);
      await zoe.page.close();
      await waitForPerson(wendy.page, 'dms', 'zoe', { status: 'offline', statusText: 'last seen' }, OFFLINE_WAIT_MS);
      const flaps = wendyFrames.slice(mark).filter((f) => f.direction === 'received'
        && f.event === 'chat.presence.changed' && f.data.userId === 'victor');
      assert.deepEqual(flaps.map((f) => f.data.status), [], 'no presence change of victor around the reload');
      await waitForPerson(wendy.page, 'dms', 'victor', { status: 'online' });

      // Closed for good: offline once the grace period ends, with when victor was last seen.
      const closedAt = Date.now();
      await victor.page.close();
      await waitForPerson(wendy.page, 'dms', 'victor', { status: 'offline', statusText: 'last seen just now' }, OFFLINE_WAIT_MS);
      const offline = await wendyFrames.waitFor((f) => f.direction === 'received' && f.event === 'chat.presence.changed'
        && f.data.userId === 'victor' && f.data.status === 'offline');
      const lastSeen = Date.parse(offline.data.lastSeen);
      assert.ok(lastSeen >= closedAt - 1000 && lastSeen <= Date.now(), `lastSeen ${offline.data.lastSeen} is when victor left`);
      assert.equal(await wendy.page.getAttribute(personSelector('dms', 'victor'), 'data-last-seen'), offline.data.lastSeen);
      assert.deepEqual(wendy.consoleErrors, []);
    } finally {
      await screenshot(wendy.page, 'people-presence');
    }
  });

  it('lists a room\'s members as they come and go, and shows a removal from a private room', { timeout: TEST_TIMEOUT_MS }, async () => {
    const publicRoom = 'e2e-people-public';
    const team = 'private:e2e-people-team';
    const gina = await open('gina');
    const hank = await open('hank');
    const hankFrames = recordFrames(hank.page);
    try {
      await connect(gina.page);
      await connect(hank.page);
      await joinRoom(gina.page, publicRoom);
      await waitForPerson(gina.page, 'room', 'gina', {});
      assert.equal(await gina.page.textContent(`${personSelector('room', 'gina')} .person-name`), 'gina (you)');
      await joinRoom(hank.page, publicRoom);
      await waitForPerson(gina.page, 'room', 'hank', { status: 'online' });
      await hank.page.click('#leave');
      await gina.page.locator(personSelector('room', 'hank')).waitFor({ state: 'detached' });

      for (const user of ['gina', 'hank']) await setRoomMember(server, team, user, true);
      await joinRoom(gina.page, team);
      await joinRoom(hank.page, team);
      await waitForPerson(gina.page, 'room', 'hank', { status: 'online' });
      await waitForPerson(hank.page, 'room', 'gina', { status: 'online' });
      await sendMessage(hank.page, 'before the removal');
      await waitForMessages(gina.page, team, 1);

      await setRoomMember(server, team, 'hank', false);
      await hank.page.locator(`#tabs .tab[data-room="${team}"][data-state="removed"][data-removed="true"]`).waitFor();
      await waitForText(hank.page, `#messages [data-event="chat.removed"][data-room="${team}"]`, 'You were removed from this room.');
      await gina.page.locator(personSelector('room', 'hank')).waitFor({ state: 'detached' });

      // The page stops sending to it.
      const mark = hankFrames.length;
      await sendMessage(hank.page, 'after the removal');
      await hank.page.locator(`#messages .notice[data-room="${team}"]`, { hasText: 'nothing can be sent' }).waitFor();
      assert.equal(await hank.page.inputValue('#message'), 'after the removal', 'the text is kept');
      assert.deepEqual(hankFrames.slice(mark).filter((f) => f.direction === 'sent'), []);
      assert.deepEqual(await waitForMessages(gina.page, team, 1), ['before the removal']);
      assert.equal(await hank.page.locator('#messages [data-event="error"]').count(), 0, 'a removal is no error');
      assert.deepEqual(hank.consoleErrors, []);
    } finally {
      await screenshot(hank.page, 'people-removed');
    }
  });
});
