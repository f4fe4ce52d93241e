'use strict';
// Edits, deletions, reactions and unread counts in the page, between real users on the real server,
// and all of them caught up after a dropped connection.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  startServer, launchBrowser, openAs, waitForText, connect, joinRoom, sendMessage, waitForMessages,
  screenshot, sendSystemMessage, moderatorDelete, openTab, controlVisibility, setHidden, recordFrames,
  messageIdOf, roomSnapshot, waitForUnread,
} = require('./support');

const TEST_TIMEOUT_MS = 90_000;
const MANY_EMOJI = ['👍', '❤️', '😂', '🎉', '😮', '😢', '🔥', '👀', '✅', '🙏', '💯', '🚀', '🤔', '👏', '😍',
  '🙌', '😎', '🥳', '🤝', '⭐', '🍕'];

const lineSelector = (roomId, id) => `#messages [data-room="${roomId}"][data-id="${id}"]`;

// Waits until the line of message `id` shows `text` (or "message deleted" with deleted: true).
async function waitForLine(page, roomId, id, { text, edited, deleted = false }) {
  await page.waitForFunction(([sel, want]) => {
    const li = document.querySelector(sel);
    if (!li) return false;
    const node = li.querySelector('.text');
    return node !== null && node.textContent === want.text
      && (li.dataset.deleted === 'true') === want.deleted
      && (want.edited === undefined || (li.dataset.edited === 'true') === want.edited);
  }, [lineSelector(roomId, id), { text, edited, deleted }]);
}

// Waits until message `id` shows exactly these chips: [[emoji, count, mine], ...].
async function waitForChips(page, roomId, id, chips) {
  await page.waitForFunction(([sel, want]) => {
    const li = document.querySelector(sel);
    if (!li) return false;
    const shown = [...li.querySelectorAll('.chip')]
      .map((chip) => [chip.dataset.emoji, Number(chip.dataset.count), chip.dataset.mine === 'true', chip.textContent]);
    return JSON.stringify(shown) === JSON.stringify(want.map(([emoji, count, mine]) => [emoji, count, mine, `${emoji} ${count}`]));
  }, [lineSelector(roomId, id), chips]);
}

async function waitForError(page, code, count = 1) {
  await page.waitForFunction(([want, n]) => [...document.querySelectorAll('#messages [data-event="error"] code')]
    .filter((node) => node.textContent === want).length >= n, [code, count]);
}

// What every reader should see, whoever they are: the per-user marks left out.
const shared = (snapshot) => snapshot.map(({ own, reactions, ...line }) => ({
  ...line, reactions: reactions.map(({ mine, ...chip }) => chip),
}));

function assertOnceEachInOrder(snapshot) {
  const ids = snapshot.map((line) => line.id);
  assert.equal(new Set(ids).size, ids.length, `no line twice: ${ids.join(', ')}`);
  for (let i = 1; i < snapshot.length; i += 1) {
    assert.ok(snapshot[i].seq > snapshot[i - 1].seq, `seq ${snapshot[i].seq} follows ${snapshot[i - 1].seq}`);
  }
}

describe('edits, deletions, reactions and unread counts', { timeout: 360_000 }, () => {
  let server;
  let browser;
  const opened = [];
  const open = async (user, options = {}) => {
    const session = await openAs(browser, server, user, options.viewport);
    opened.push(session);
    return session;
  };

  before(async () => {
    // Forged frames and quick series of actions go faster than the default per-user frame rate.
    server = await startServer({ RATE_LIMIT_BURST: '500', RATE_LIMIT_PER_SEC: '500' });
    browser = await launchBrowser();
  });

  after(async () => {
    for (const session of opened) await session.context.close().catch(() => {});
    if (browser) await browser.close().catch(() => {});
    if (server) await server.stop();
  });

  it('edits, deletes and reacts, for both users, and only the author edits or deletes', { timeout: TEST_TIMEOUT_MS }, async () => {
    const room = 'e2e-events';
    const alice = await open('alice');
    const bob = await open('bob');
    try {
      await connect(alice.page);
      await connect(bob.page);
      await joinRoom(alice.page, room);
      await joinRoom(bob.page, room);
      await sendMessage(alice.page, 'Helo Bob');
      await waitForMessages(bob.page, room, 1);
      await sendMessage(bob.page, 'Hi Alice');
      await sendMessage(alice.page, 'React to this');
      await sendMessage(alice.page, 'This will go');
      await sendMessage(alice.page, 'Crowded');
      await waitForMessages(bob.page, room, 5);
      await waitForMessages(alice.page, room, 5);
      const hello = await messageIdOf(alice.page, room, 'Helo Bob');
      const bobs = await messageIdOf(alice.page, room, 'Hi Alice');
      const react = await messageIdOf(alice.page, room, 'React to this');
      const doomed = await messageIdOf(alice.page, room, 'This will go');
      const crowded = await messageIdOf(alice.page, room, 'Crowded');
      await messageIdOf(bob.page, room, 'Hi Alice');

      // Only the author's own lines offer edit and delete.
      for (const id of [hello, react, doomed, crowded]) {
        assert.equal(await alice.page.locator(`${lineSelector(room, id)} [data-action="edit"]`).count(), 1);
        assert.equal(await alice.page.locator(`${lineSelector(room, id)} [data-action="delete"]`).count(), 1);
        assert.equal(await bob.page.locator(`${lineSelector(room, id)} [data-action="edit"]`).count(), 0);
        assert.equal(await bob.page.locator(`${lineSelector(room, id)} [data-action="delete"]`).count(), 0);
      }
      assert.equal(await alice.page.locator(`${lineSelector(room, bobs)} [data-action="edit"]`).count(), 0);
      assert.equal(await bob.page.locator(`${lineSelector(room, bobs)} [data-action="edit"]`).count(), 1);

      // Edit: both sides see the new text and "(edited)", with the time as a tooltip.
      await alice.page.click(`${lineSelector(room, hello)} [data-action="edit"]`);
      const input = alice.page.locator(`${lineSelector(room, hello)} .edit-input`);
      assert.equal(await input.inputValue(), 'Helo Bob');
      await input.fill('Hello Bob');
      await input.press('Enter');
      for (const { page } of [alice, bob]) {
        await waitForLine(page, room, hello, { text: 'Hello Bob', edited: true });
        const mark = page.locator(`${lineSelector(room, hello)} .edited`);
        assert.equal(await mark.textContent(), '(edited)');
        assert.ok(await mark.isVisible());
        assert.match(await mark.getAttribute('title'), /^Edited /);
        assert.ok(!Number.isNaN(Date.parse(await mark.getAttribute('data-edited-at'))));
      }
      // A double-click on your own text opens the editor too; Escape leaves it unchanged.
      await bob.page.dblclick(`${lineSelector(room, bobs)} .text`);
      await bob.page.locator(`${lineSelector(room, bobs)} .edit-input`).press('Escape');
      await waitForLine(bob.page, room, bobs, { text: 'Hi Alice', edited: false });

      // A forged edit or delete of someone else's message is refused, and shown as an error.
      assert.equal(await bob.page.evaluate(([roomId, messageId]) => window.chatPage.send('chat.edit',
        { roomId, messageId, message: 'bob was here' }), [room, hello]), true);
      await waitForError(bob.page, 'forbidden');
      assert.equal(await bob.page.evaluate(([roomId, messageId]) => window.chatPage.send('chat.delete',
        { roomId, messageId }), [room, hello]), true);
      await waitForError(bob.page, 'forbidden', 2);
      await waitForLine(alice.page, room, hello, { text: 'Hello Bob', edited: true });

      // Reactions: bob picks 👍, alice's chip joins in, and clicking again takes hers back.
      await bob.page.click(`${lineSelector(room, react)} [data-action="react"]`);
      await bob.page.click(`${lineSelector(room, react)} .picker [data-emoji="👍"]`);
      await waitForChips(alice.page, room, react, [['👍', 1, false]]);
      await waitForChips(bob.page, room, react, [['👍', 1, true]]);
      assert.equal(await bob.page.locator(`${lineSelector(room, react)} .picker`).count(), 0, 'the picker closes');
      await alice.page.click(`${lineSelector(room, react)} .chip[data-emoji="👍"]`);
      await waitForChips(alice.page, room, react, [['👍', 2, true]]);
      await waitForChips(bob.page, room, react, [['👍', 2, true]]);
      await alice.page.click(`${lineSelector(room, react)} .chip[data-emoji="👍"]`);
      await waitForChips(alice.page, room, react, [['👍', 1, false]]);
      await waitForChips(bob.page, room, react, [['👍', 1, true]]);
      await alice.page.click(`${lineSelector(room, react)} [data-action="react"]`);
      await alice.page.click(`${lineSelector(room, react)} .picker [data-emoji="🎉"]`);
      await waitForChips(bob.page, room, react, [['👍', 1, true], ['🎉', 1, false]]);

      // At most 20 distinct emoji on a message: the 21st is refused and shown as an error.
      for (const emoji of MANY_EMOJI) {
        await alice.page.evaluate(([roomId, messageId, e]) => window.chatPage.send('chat.react',
          { roomId, messageId, emoji: e }), [room, crowded, emoji]);
      }
      await waitForError(alice.page, 'too_many_reactions');
      const twenty = MANY_EMOJI.slice(0, 20).map((emoji) => [emoji, 1, false]);
      await waitForChips(bob.page, room, crowded, twenty);
      await waitForChips(alice.page, room, crowded, twenty.map(([emoji, count]) => [emoji, count, true]));

      // Delete: "message deleted" in place on both sides, with no reactions or actions left.
      await alice.page.click(`${lineSelector(room, crowded)} [data-action="delete"]`);
      await alice.page.click(`${lineSelector(room, crowded)} [data-action="confirm-delete"]`);
      await alice.page.click(`${lineSelector(room, doomed)} [data-action="delete"]`);
      await alice.page.click(`${lineSelector(room, doomed)} [data-action="cancel-delete"]`);
      for (const { page } of [alice, bob]) {
        await waitForLine(page, room, crowded, { text: 'message deleted', deleted: true });
        assert.equal(await page.locator(`${lineSelector(room, crowded)} .chip`).count(), 0);
        assert.equal(await page.locator(`${lineSelector(room, crowded)} button`).count(), 0);
        await waitForLine(page, room, doomed, { text: 'This will go', deleted: false });
      }
      await alice.page.click(`${lineSelector(room, doomed)} [data-action="delete"]`);
      await alice.page.click(`${lineSelector(room, doomed)} [data-action="confirm-delete"]`);
      await waitForLine(bob.page, room, doomed, { text: 'message deleted', deleted: true });
      // Reacting to a deleted message: not_found.
      await bob.page.evaluate(([roomId, messageId]) => window.chatPage.send('chat.react',
        { roomId, messageId, emoji: '👍' }), [room, doomed]);
      await waitForError(bob.page, 'not_found');

      // A moderator's deletion reaches everyone the same way.
      const moderated = await moderatorDelete(server, room, bobs);
      assert.equal(moderated.messageId, bobs);
      for (const { page } of [alice, bob]) await waitForLine(page, room, bobs, { text: 'message deleted', deleted: true });

      // A newcomer's history shows the same: edited text, reactions, deletions in place.
      const carol = await open('carol');
      await connect(carol.page);
      await joinRoom(carol.page, room);
      await waitForMessages(carol.page, room, 5);
      await waitForLine(carol.page, room, hello, { text: 'Hello Bob', edited: true });
      await waitForLine(carol.page, room, bobs, { text: 'message deleted', deleted: true });
      await waitForChips(carol.page, room, react, [['👍', 1, false], ['🎉', 1, false]]);
      const aliceSees = await roomSnapshot(alice.page, room);
      assert.deepEqual(shared(await roomSnapshot(carol.page, room)), shared(aliceSees));
      assert.deepEqual(shared(await roomSnapshot(bob.page, room)), shared(aliceSees));
      assert.deepEqual(aliceSees.map((line) => line.text),
        ['Hello Bob', 'message deleted', 'React to this', 'message deleted', 'message deleted']);

      assert.equal(await alice.page.locator('#messages img').count(), 0);
      assert.deepEqual([...alice.consoleErrors, ...bob.consoleErrors, ...carol.consoleErrors], []);
    } finally {
      await screenshot(alice.page, 'events-alice');
      await screenshot(bob.page, 'events-bob');
    }
  });

  it('counts unread per room from the server, clears it when read, here or in another tab', { timeout: TEST_TIMEOUT_MS }, async () => {
    const roomA = 'e2e-unread-a';
    const roomB = 'e2e-unread-b';
    const alice = await open('alice');
    const bob = await open('bob');
    const bobFrames = recordFrames(bob.page);
    const bobTab2 = await openTab(bob);
    await controlVisibility(bobTab2);
    const tab2Frames = recordFrames(bobTab2);
    try {
      await connect(alice.page);
      await joinRoom(alice.page, roomA);
      await joinRoom(alice.page, roomB);
      for (const page of [bob.page, bobTab2]) {
        await connect(page);
        await joinRoom(page, roomB);
        await joinRoom(page, roomA);
      }
      // Each tab learns who it is from its own echo.
      await sendMessage(bob.page, 'tab one here');
      await waitForMessages(bob.page, roomA, 1);
      await sendMessage(bobTab2, 'tab two here');
      await waitForMessages(bobTab2, roomA, 2);
      await waitForMessages(bob.page, roomA, 2);

      for (const text of ['b1', 'b2', 'b3']) await sendMessage(alice.page, text);
      await waitForMessages(alice.page, roomB, 3);
      for (const page of [bob.page, bobTab2]) {
        await waitForUnread(page, roomB, 3);
        await waitForUnread(page, roomA, 0);
      }
      assert.equal(await bob.page.title(), '(3) Chat');

      // Opening the room reads it: the badge goes, and bob's other tab hears of it.
      await bob.page.click(`#tabs .tab[data-room="${roomB}"]`);
      await waitForUnread(bob.page, roomB, 0);
      const read = await bobFrames.waitFor((f) => f.direction === 'sent' && f.event === 'chat.read' && f.data.roomId === roomB);
      const lastB = await bob.page.evaluate((id) => window.chatPage.roomState(id).highestSeq, roomB);
      assert.equal(read.data.seq, lastB);
      await waitForUnread(bobTab2, roomB, 0);
      assert.equal(await bob.page.title(), 'Chat');

      // A fresh page of bob is told by the server: nothing unread, the marker at the last seq.
      await bob.page.reload();
      await connect(bob.page);
      await joinRoom(bob.page, roomA);
      await joinRoom(bob.page, roomB);
      const joined = await bobFrames.waitFor((f) => f.direction === 'received' && f.event === 'chat.joined'
        && f.data.roomId === roomB && bobFrames.indexOf(f) > bobFrames.indexOf(read));
      assert.equal(joined.data.unread, 0);
      assert.equal(joined.data.readSeq, lastB);
      assert.equal(joined.data.lastSeq, lastB);
      await bob.page.click(`#tabs .tab[data-room="${roomA}"]`);

      // Deleting an unread message lowers the count; deleting one already read does not, and
      // edits and reactions are not messages to read.
      await sendMessage(alice.page, 'b4');
      await sendMessage(alice.page, 'b5');
      for (const page of [bob.page, bobTab2]) await waitForUnread(page, roomB, 2);
      await alice.page.click(`${lineSelector(roomB, await messageIdOf(alice.page, roomB, 'b1'))} [data-action="delete"]`);
      await alice.page.click('[data-action="confirm-delete"]');
      const b4 = await messageIdOf(alice.page, roomB, 'b4');
      await alice.page.click(`${lineSelector(roomB, b4)} [data-action="delete"]`);
      await alice.page.click('[data-action="confirm-delete"]');
      const b5 = await messageIdOf(alice.page, roomB, 'b5');
      await alice.page.click(`${lineSelector(roomB, b5)} [data-action="edit"]`);
      await alice.page.locator(`${lineSelector(roomB, b5)} .edit-input`).fill('b5, edited');
      await alice.page.locator(`${lineSelector(roomB, b5)} .edit-input`).press('Enter');
      await alice.page.click(`${lineSelector(roomB, b5)} [data-action="react"]`);
      await alice.page.click(`${lineSelector(roomB, b5)} .picker [data-emoji="😮"]`);
      for (const [page, frames] of [[bob.page, bobFrames], [bobTab2, tab2Frames]]) {
        const reaction = await frames.waitFor((f) => f.direction === 'received' && f.event === 'chat.reaction'
          && f.data.roomId === roomB);
        await page.waitForFunction(([r, seq]) => window.chatPage.roomState(r).highestSeq >= seq, [roomB, reaction.data.seq]);
        assert.equal((await page.evaluate((r) => window.chatPage.roomState(r), roomB)).unread, 1);
        await waitForUnread(page, roomB, 1);
      }

      // A hidden page counts even the room it shows, starts from chat.joined's count, and reads
      // the shown room when it becomes visible again. (Tab one goes offline, or reading room A
      // there would clear it here too.)
      await bob.page.click('#disconnect');
      await waitForText(bob.page, '#status', 'Disconnected');
      await bobTab2.reload();
      await setHidden(bobTab2, true);
      await connect(bobTab2);
      await joinRoom(bobTab2, roomB);
      await joinRoom(bobTab2, roomA);
      const tab2Joined = await tab2Frames.waitFor((f) => f.direction === 'received' && f.event === 'chat.joined'
        && f.data.roomId === roomB && f.data.unread === 1);
      assert.equal(tab2Joined.data.readSeq, lastB);
      await waitForUnread(bobTab2, roomB, 1);
      await sendMessage(alice.page, 'into a hidden room');
      await alice.page.click(`#tabs .tab[data-room="${roomA}"]`);
      await sendMessage(alice.page, 'a1 while bob is away');
      await waitForUnread(bobTab2, roomA, 1);
      await waitForUnread(bobTab2, roomB, 2);
      assert.equal(await bobTab2.title(), '(3) Chat');
      await setHidden(bobTab2, false);
      await waitForUnread(bobTab2, roomA, 0);
      await waitForUnread(bobTab2, roomB, 2);
      await bobTab2.click(`#tabs .tab[data-room="${roomB}"]`);
      await waitForUnread(bobTab2, roomB, 0);

      // Tab one comes back: the server's counts say both rooms were read.
      const mark = bobFrames.length;
      await connect(bob.page);
      for (const roomId of [roomA, roomB]) {
        const back = await bobFrames.waitFor((f) => f.direction === 'received' && f.event === 'chat.joined'
          && f.data.roomId === roomId && bobFrames.indexOf(f) >= mark);
        assert.equal(back.data.unread, 0, `nothing unread in ${roomId}`);
        await waitForUnread(bob.page, roomId, 0);
      }
      assert.deepEqual(bob.consoleErrors, []);
    } finally {
      await screenshot(bob.page, 'unread-bob');
      await screenshot(bobTab2, 'unread-bob-tab2');
    }
  });

  it('catches up on edits, reactions and deletions missed while disconnected', { timeout: TEST_TIMEOUT_MS }, async () => {
    const room = 'e2e-events-recovery';
    const alice = await open('alice');
    const bob = await open('bob');
    const bobFrames = recordFrames(bob.page);
    try {
      await connect(alice.page);
      await connect(bob.page);
      await joinRoom(alice.page, room);
      await joinRoom(bob.page, room);
      const before = ['m1', 'm2', 'm3', 'm4', 'm5', 'm6'];
      for (const text of before) await sendMessage(alice.page, text);
      await sendMessage(bob.page, 'bob was here');
      await waitForMessages(alice.page, room, before.length + 1);
      await waitForMessages(bob.page, room, before.length + 1);
      const id = {};
      for (const text of [...before, 'bob was here']) id[text] = await messageIdOf(alice.page, room, text);
      await bob.page.click(`${lineSelector(room, id.m2)} [data-action="react"]`);
      await bob.page.click(`${lineSelector(room, id.m2)} .picker [data-emoji="👍"]`);
      await waitForChips(alice.page, room, id.m2, [['👍', 1, false]]);
      await waitForChips(bob.page, room, id.m2, [['👍', 1, true]]);

      const seenBefore = await bob.page.evaluate((r) => window.chatPage.roomState(r).highestSeq, room);
      assert.equal(await bob.page.evaluate(() => window.chatPage.dropConnection(60_000)), true);
      await waitForText(bob.page, '#status', 'Connecting…');

      // Meanwhile: edits (twice), reactions added and taken back, deletions by the author and a
      // moderator, reactions and an edit of messages deleted afterwards, a system message, and new
      // messages edited and reacted to.
      const act = async (action, target, extra) => {
        const sel = lineSelector(room, target);
        if (action === 'edit') {
          await alice.page.click(`${sel} [data-action="edit"]`);
          await alice.page.locator(`${sel} .edit-input`).fill(extra);
          await alice.page.locator(`${sel} .edit-input`).press('Enter');
          await waitForLine(alice.page, room, target, { text: extra, edited: true });
        } else if (action === 'delete') {
          await alice.page.click(`${sel} [data-action="delete"]`);
          await alice.page.click(`${sel} [data-action="confirm-delete"]`);
          await waitForLine(alice.page, room, target, { text: 'message deleted', deleted: true });
        } else {
          await alice.page.click(`${sel} [data-action="react"]`);
          await alice.page.click(`${sel} .picker [data-emoji="${extra}"]`);
          await alice.page.locator(`${sel} .chip[data-emoji="${extra}"][data-mine="true"]`).waitFor();
        }
      };
      await act('edit', id.m1, 'm1 edited');
      await act('edit', id.m1, 'm1 edited twice');
      await act('react', id.m2, '👍');
      await act('react', id.m2, '❤️');
      await alice.page.click(`${lineSelector(room, id.m2)} .chip[data-emoji="❤️"]`);
      await alice.page.locator(`${lineSelector(room, id.m2)} .chip[data-emoji="❤️"]`).waitFor({ state: 'detached' });
      await act('delete', id.m3);
      await act('react', id.m4, '🎉');
      await act('delete', id.m4);
      await act('edit', id.m5, 'm5 edited, then deleted');
      await act('delete', id.m5);
      await moderatorDelete(server, room, id['bob was here']);
      await waitForLine(alice.page, room, id['bob was here'], { text: 'message deleted', deleted: true });
      await sendSystemMessage(server, room, 'Back in a minute');
      await sendMessage(alice.page, 'n1');
      await sendMessage(alice.page, 'n2');
      id.n1 = await messageIdOf(alice.page, room, 'n1');
      id.n2 = await messageIdOf(alice.page, room, 'n2');
      await act('edit', id.n1, 'n1 edited');
      await act('react', id.n2, '😂');
      await act('react', id.m6, '😮');
      await act('delete', id.m6);
      assert.equal(await bob.page.textContent('#status'), 'Connecting…', 'bob stayed away throughout');

      assert.equal(await bob.page.evaluate(() => window.chatPage.reconnect()), true);
      await waitForText(bob.page, '#status', 'Connected');
      const rejoin = await bobFrames.waitFor((f) => f.direction === 'sent' && f.event === 'chat.join' && f.data.since !== undefined);
      assert.equal(rejoin.data.since, seenBefore, 'the rejoin resumes after the highest seq of any event seen');
      const rejoined = await bobFrames.waitFor((f) => f.direction === 'received' && f.event === 'chat.joined'
        && bobFrames.indexOf(f) > bobFrames.indexOf(rejoin));
      assert.equal(rejoined.data.recovered, true);
      // Whatever the replay brings arrives before anything newer.
      await sendMessage(alice.page, 'after the reconnect');
      await waitForMessages(bob.page, room, 10);
      await messageIdOf(bob.page, room, 'after the reconnect');

      const expected = [
        { text: 'm1 edited twice', edited: true, deleted: false, reactions: [] },
        { text: 'm2', edited: false, deleted: false, reactions: [{ emoji: '👍', count: 2, mine: true, label: '👍 2' }] },
        { text: 'message deleted', edited: false, deleted: true, reactions: [] },
        { text: 'message deleted', edited: false, deleted: true, reactions: [] },
        { text: 'message deleted', edited: false, deleted: true, reactions: [] },
        { text: 'message deleted', edited: false, deleted: true, reactions: [] },
        { text: 'message deleted', edited: false, deleted: true, reactions: [] },
        { event: 'chat.system', text: 'Back in a minute', edited: false, deleted: false, reactions: [] },
        { text: 'n1 edited', edited: true, deleted: false, reactions: [] },
        { text: 'n2', edited: false, deleted: false, reactions: [{ emoji: '😂', count: 1, mine: false, label: '😂 1' }] },
        { text: 'after the reconnect', edited: false, deleted: false, reactions: [] },
      ];
      const bobSees = await roomSnapshot(bob.page, room);
      assert.deepEqual(bobSees.map(({ event, text, edited, deleted, reactions }) => ({ event, text, edited, deleted, reactions })),
        expected.map((line) => ({ event: 'chat.message', ...line })));
      assert.deepEqual(bobSees.map((line) => line.id),
        [id.m1, id.m2, id.m3, id.m4, id.m5, id.m6, id['bob was here']].concat(bobSees.slice(7).map((line) => line.id)));
      assertOnceEachInOrder(bobSees);
      assert.deepEqual(shared(bobSees), shared(await roomSnapshot(alice.page, room)));

      // The page's resume point is the room's newest event.
      const [bobState, aliceState] = await Promise.all([bob.page, alice.page]
        .map((page) => page.evaluate((r) => window.chatPage.roomState(r), room)));
      assert.equal(bobState.highestSeq, aliceState.highestSeq);

      // And a newcomer, from history alone, sees the same room.
      const carol = await open('carol');
      await connect(carol.page);
      await joinRoom(carol.page, room);
      await messageIdOf(carol.page, room, 'after the reconnect');
      assert.deepEqual(shared(await roomSnapshot(carol.page, room)), shared(bobSees));
      assert.deepEqual([...alice.consoleErrors, ...bob.consoleErrors, ...carol.consoleErrors], []);
    } finally {
      await screenshot(bob.page, 'events-recovery-bob');
    }
  });
});
