'use strict';
// Files in the page, between real users on the real server: alice attaches an image and a
// document, bob sees the thumbnail and downloads the original byte for byte; a file too large and
// a page disguised as an image are refused, visibly.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const zlib = require('node:zlib');
const {
  startServer, launchBrowser, openAs, connect, joinRoom, sendMessage, screenshot,
} = require('./support');

const TEST_TIMEOUT_MS = 90_000;
const MAX_UPLOAD_BYTES = 1024 * 1024;
const ROOM = 'files';

// A PNG of `width` x `height` with a pattern (so that it is not trivially small), no metadata.
function png(width, height) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc32 = (bytes) => {
    let c = 0xffffffff;
    for (const b of bytes) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([length, body, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // RGB
  const rows = [];
  for (let y = 0; y < height; y += 1) {
    const row = Buffer.alloc(1 + width * 3);
    for (let x = 0; x < width; x += 1) {
      row[1 + x * 3] = (x * 255) / width;
      row[2 + x * 3] = (y * 255) / height;
      row[3 + x * 3] = (x ^ y) & 0xff;
    }
    rows.push(row);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', zlib.deflateSync(Buffer.concat(rows))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

// Attaches files through the page's file picker, as a user choosing them does.
async function attach(page, files) {
  await page.setInputFiles('#file-input', files);
}

async function waitForUpload(page, name, state) {
  await page.waitForFunction(([want, st]) => [...document.querySelectorAll('#uploads .upload')]
    .some((node) => node.querySelector('.upload-name').textContent === want && node.dataset.state === st), [name, state]);
}

// The last message line in the room with an attachment, once its files are all shown.
async function waitForAttachments(page, count) {
  await page.waitForFunction((n) => {
    const lines = [...document.querySelectorAll(`#messages li[data-event="chat.message"]`)]
      .filter((li) => li.querySelector('.files [data-file-id]'));
    const last = lines[lines.length - 1];
    return last && last.querySelectorAll('.files [data-file-id]').length === n;
  }, count);
}

describe('files in messages', { timeout: 240_000 }, () => {
  let server;
  let browser;
  let alice;
  let bob;

  before(async () => {
    server = await startServer({ MAX_UPLOAD_BYTES: String(MAX_UPLOAD_BYTES) });
    browser = await launchBrowser();
    alice = await openAs(browser, server, 'alice');
    bob = await openAs(browser, server, 'bob');
    for (const session of [alice, bob]) {
      await connect(session.page);
      await joinRoom(session.page, ROOM);
    }
  });

  after(async () => {
    if (browser) await browser.close();
    if (server) await server.stop();
  });

  it('bob sees alice\'s image as a thumbnail and downloads the original byte for byte', { timeout: TEST_TIMEOUT_MS }, async () => {
    const picture = png(640, 400);
    await attach(alice.page, { name: 'sunset.png', mimeType: 'image/png', buffer: picture });
    await waitForUpload(alice.page, 'sunset.png', 'ready');
    // The progress bar went all the way before it was hidden.
    const progress = await alice.page.$eval('#uploads .upload', (node) => node.dataset.progress);
    assert.equal(progress, '100');
    await sendMessage(alice.page, 'look at this');
    await waitForAttachments(alice.page, 1);
    await waitForAttachments(bob.page, 1);
    assert.equal(await alice.page.$$eval('#uploads .upload', (nodes) => nodes.length), 0, 'sent files leave the composer');

    // The thumbnail loaded in bob's page, no larger than 320 px.
    const thumbnail = await bob.page.waitForFunction(() => {
      const img = document.querySelector('#messages .file-image img');
      return img && img.complete && img.naturalWidth > 0
        && { width: img.naturalWidth, height: img.naturalHeight, src: img.getAttribute('src'), alt: img.alt,
          href: img.closest('a').getAttribute('href'), target: img.closest('a').target };
    });
    const shown = await thumbnail.jsonValue();
    assert.deepEqual([shown.width, shown.height], [320, 200]);
    assert.equal(shown.alt, 'sunset.png');
    assert.match(shown.href, /^\/chat\/api\/files\/[0-9a-f-]+$/);
    assert.equal(shown.src, `${shown.href}/thumbnail`);
    assert.equal(shown.target, '_blank');
    const text = await bob.page.$eval('#messages li[data-event="chat.message"]:last-of-type .text', (n) => n.textContent);
    assert.equal(text, 'look at this');

    // Full size: what a click opens, fetched with bob's cookie.
    const original = await bob.page.evaluate(async (href) => {
      const response = await fetch(href);
      return {
        status: response.status,
        type: response.headers.get('content-type'),
        nosniff: response.headers.get('x-content-type-options'),
        csp: response.headers.get('content-security-policy'),
        bytes: [...new Uint8Array(await response.arrayBuffer())],
      };
    }, shown.href);
    assert.equal(original.status, 200);
    assert.equal(original.type, 'image/png');
    assert.equal(original.nosniff, 'nosniff');
    assert.equal(original.csp, 'sandbox');
    assert.ok(Buffer.from(original.bytes).equals(picture), 'the download is the picture alice sent');
    const [opened] = await Promise.all([
      bob.context.waitForEvent('page'),
      bob.page.click('#messages .file-image img'),
    ]);
    await opened.waitForLoadState();
    assert.equal(new URL(opened.url()).pathname, shown.href);
    await opened.close();
    await screenshot(bob.page, 'files-image');
  });

  it('other files come as name, size and a download link; pasted and dropped files upload too', { timeout: TEST_TIMEOUT_MS }, async () => {
    const notes = Buffer.from('Minutes of the meeting\n- ship it\n'.repeat(40));
    await alice.page.evaluate(({ name, text }) => {
      const data = new DataTransfer();
      data.items.add(new File([text], name, { type: 'text/plain' }));
      document.querySelector('#message').dispatchEvent(new ClipboardEvent('paste', { clipboardData: data, bubbles: true }));
    }, { name: 'notes.txt', text: notes.toString() });
    await waitForUpload(alice.page, 'notes.txt', 'ready');
    await alice.page.evaluate(() => {
      const data = new DataTransfer();
      data.items.add(new File(['%PDF-1.4\n%%EOF\n'], 'report.pdf', { type: 'application/pdf' }));
      const target = document.querySelector('#messages');
      target.dispatchEvent(new DragEvent('dragenter', { dataTransfer: data, bubbles: true }));
      target.dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
    });
    await waitForUpload(alice.page, 'report.pdf', 'ready');
    // Files alone make a message.
    await alice.page.click('#send');
    await waitForAttachments(bob.page, 2);
    const links = await bob.page.$$eval('#messages li[data-event="chat.message"]:last-of-type .file-link', (nodes) => nodes.map((a) => ({
      name: a.querySelector('.file-name').textContent, size: a.querySelector('.file-size').textContent,
      download: a.getAttribute('download'), href: a.getAttribute('href'),
    })));
    assert.deepEqual(links.map(({ name, size, download }) => ({ name, size, download })), [
      { name: '📄 notes.txt', size: '1.3 KB', download: 'notes.txt' },
      { name: '📄 report.pdf', size: '15 B', download: 'report.pdf' },
    ]);
    const fetched = await bob.page.evaluate(async (href) => {
      const response = await fetch(href);
      return { disposition: response.headers.get('content-disposition'), text: await response.text() };
    }, links[0].href);
    assert.equal(fetched.text, notes.toString());
    assert.match(fetched.disposition, /^attachment;/);
  });

  it('a file too large and a page disguised as an image are refused, visibly', { timeout: TEST_TIMEOUT_MS }, async () => {
    await attach(alice.page, { name: 'huge.txt', mimeType: 'text/plain', buffer: Buffer.alloc(MAX_UPLOAD_BYTES * 2, 'a') });
    await waitForUpload(alice.page, 'huge.txt', 'failed');
    await attach(alice.page, {
      name: 'cute-cat.png', mimeType: 'image/png', buffer: Buffer.from('<!doctype html><script>alert(document.cookie)</script>'),
    });
    await waitForUpload(alice.page, 'cute-cat.png', 'failed');
    const failed = await alice.page.$$eval('#uploads .upload[data-state="failed"]', (nodes) => nodes.map((node) => ({
      name: node.querySelector('.upload-name').textContent, code: node.dataset.code,
      reason: node.querySelector('.upload-error').textContent,
    })));
    assert.deepEqual(failed, [
      { name: 'huge.txt', code: 'file_too_large', reason: 'too large' },
      { name: 'cute-cat.png', code: 'unsupported_media_type', reason: 'not a type of file that can be sent' },
    ]);
    for (const code of ['file_too_large', 'unsupported_media_type']) {
      const line = alice.page.locator('#messages li[data-event="error"]', { has: alice.page.locator(`code:text-is("${code}")`) });
      assert.equal(await line.isVisible(), true, `${code} is shown`);
    }
    await screenshot(alice.page, 'files-refused');
    // Nothing was sent: Send with only failed files does nothing, and the page still works.
    await alice.page.click('#send');
    await sendMessage(alice.page, 'never mind');
    await bob.page.waitForFunction(() => [...document.querySelectorAll('#messages li[data-event="chat.message"] .text')]
      .some((node) => node.textContent === 'never mind'));
    const withFiles = await bob.page.$$eval('#messages li[data-event="chat.message"]', (lines) => lines
      .filter((li) => li.querySelector('.files [data-file-id]')).length);
    assert.equal(withFiles, 2);
    assert.deepEqual(alice.consoleErrors, []);
    assert.deepEqual(bob.consoleErrors, []);
  });
});
