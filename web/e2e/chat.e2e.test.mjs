// Browser test of the chat page against the real server and a real PostgreSQL:
// two people sign in, talk in a room and by DM, see each other online and typing, scroll back
// through history; the server is restarted twice mid-conversation (graceful SIGTERM, then a
// SIGKILL crash) and no message may be lost or doubled, neither in the pages nor in the database.
//
// Run: node --test chat.e2e.test.mjs   (after `make -C web build`; the server's .venv must exist)
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { newDevicePage, startStage, stopStage } from './lib/stage.mjs';
import { stepsWithScreenshots } from './lib/steps.mjs';
import { WAIT, composer, joinRoom, openRoom, send, waitForStatus, waitForText } from './lib/dom.mjs';

const pw = () => randomBytes(9).toString('base64url');
const users = { alice: pw(), bob: pw() };

let db;
let server;
let browser;
/** @type {Record<string, import('playwright-core').Page>} */
const pages = {};

const { snap, step } = stepsWithScreenshots(pages, '');

// ----- DOM helpers (everything waits on the DOM, nothing sleeps) -----------------------------

/** [{id, text, from}] of the confirmed messages in the open conversation, in DOM order. */
function domMessages(page) {
  return page.$$eval('[data-testid=message]', (els) =>
    els.map((e) => ({
      id: Number(e.getAttribute('data-id')),
      from: e.getAttribute('data-from'),
      text: e.querySelector('.message-content')?.textContent ?? '',
    })),
  );
}

/** In the page: whether the newest confirmed message `text` is on screen, inside the scrolled message list. */
const IN_VIEW = (t) => {
  const list = document.querySelector('[data-testid=message-list]');
  const m = [...document.querySelectorAll('[data-testid=message] .message-content')].filter((e) => e.textContent === t).at(-1);
  if (!list || !m) return false;
  const box = list.getBoundingClientRect();
  const r = m.getBoundingClientRect();
  return r.top >= box.top && r.bottom <= box.bottom;
};

/** Waits until the newest confirmed message `text` is on screen, inside the scrolled message list. */
function waitInView(page, text) {
  return page.waitForFunction(IN_VIEW, text);
}

/** Lets the page lay itself out, run its observers and draw: two animation frames. */
function frames(page) {
  return page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
}

/** Whether `text` is in view once the page has drawn what it has now (not after some later update). */
async function inViewNow(page, text) {
  await frames(page);
  return page.evaluate(IN_VIEW, text);
}

/** Scrolls the message list to its top, and lets the page see that scroll. */
async function scrollToTop(page) {
  await page.$eval('[data-testid=message-list]', (el) => el.scrollTo(0, 0));
  await frames(page);
}

/** Answers the next dialog (confirm) with `accept`, resolves to its text. */
function nextDialog(page, accept) {
  return new Promise((resolve) =>
    page.once('dialog', async (d) => {
      resolve(d.message());
      await (accept ? d.accept() : d.dismiss());
    }),
  );
}

function waitNoPending(page, timeout = WAIT) {
  return page.waitForFunction(() => document.querySelectorAll('[data-testid=pending-message]').length === 0, null, {
    timeout,
  });
}

async function openDm(page, username) {
  await page.click(`[data-testid=dm-item][data-username="${username}"]`);
  await page.waitForFunction((u) => document.querySelector('[data-testid=conv-title]')?.textContent === u, username);
}

/** Every expected text exactly once, nothing else, ids unique and increasing. */
async function assertExactly(page, expected, label) {
  const got = await domMessages(page);
  const ids = got.map((m) => m.id);
  assert.deepEqual(
    ids,
    [...ids].sort((a, b) => a - b),
    `${label}: messages are not in id order`,
  );
  assert.equal(new Set(ids).size, ids.length, `${label}: a message id is shown twice`);
  assert.deepEqual(
    got.map((m) => m.text),
    expected,
    `${label}: the conversation differs from what was sent`,
  );
}

async function signIn(name, password, page = pages[name]) {
  await page.goto(server.base + '/');
  await signInHere(name, password, page);
}

/** Signs in on the sign-in page already shown (no reload: what the page holds in memory stays). */
async function signInHere(name, password, page = pages[name]) {
  await page.fill('input[name=username]', name);
  await page.fill('input[name=password]', password);
  await page.click('button[type=submit]');
  await waitForStatus(page, 'open');
  await page.waitForFunction((n) => document.querySelector('[data-testid=me]')?.textContent === n, name);
}

// ----- the scenario -----------------------------------------------------------------------------

describe('chat page against the real server', { timeout: 180_000 }, () => {
  const general = []; // expected #general conversation, in order
  const dm = []; // expected alice<->bob DM conversation, in order
  const elsewhere = []; // messages stored in other rooms (but #archive)

  before(async () => {
    ({ db, server, browser } = await startStage(users));
    for (const name of Object.keys(users)) pages[name] = await newDevicePage(browser, name);
  });

  after(() => stopStage({ db, server, browser }));

  step('refuses a wrong password with a visible error', async () => {
    const page = pages.alice;
    await page.goto(server.base + '/');
    await page.fill('input[name=username]', 'alice');
    await page.fill('input[name=password]', 'not-the-password');
    await page.click('button[type=submit]');
    const err = await page.waitForSelector('[data-testid=login-error]');
    assert.match(await err.textContent(), /wrong username or password/i);
  });

  step('both sign in, land in #general and see each other online', async () => {
    await signIn('alice', users.alice);
    await signIn('bob', users.bob);
    for (const [me, other] of [
      ['alice', 'bob'],
      ['bob', 'alice'],
    ]) {
      const page = pages[me];
      await page.waitForFunction(() => document.querySelector('[data-testid=conv-title]')?.textContent === '#general');
      await page.waitForSelector(`[data-testid=online-user][data-username=${other}]`);
      // the room list shows 2 people online in #general
      await page.waitForFunction(
        () =>
          document.querySelector('[data-testid=room-item][data-room=general] [data-testid=room-online]')?.textContent ===
          '2',
      );
    }
    await snap('signed-in');
  });

  step('exchange room messages, with the typing indicator', async () => {
    await composer(pages.bob).fill('bob is about to say something');
    const typing = await pages.alice.waitForSelector('[data-testid=typing]:has-text("bob is typing")');
    assert.ok(typing);
    await snap('typing');
    await composer(pages.bob).fill('');
    const lines = [
      ['alice', 'Hi Bob! Did you see the release notes?'],
      ['bob', 'Hi Alice, yes: reconnects are seamless now.'],
      ['alice', 'Let us test that right away.'],
      ['bob', 'Go ahead — ça marche, « vraiment ».'],
    ];
    for (const [who, text] of lines) {
      await send(pages[who], text);
      general.push(text);
      await Promise.all([waitForText(pages.alice, text), waitForText(pages.bob, text)]);
    }
    // the indicator goes away once bob's message arrived
    await pages.alice.waitForFunction(() => !document.querySelector('[data-testid=typing]')?.textContent);
    await assertExactly(pages.alice, general, 'alice #general');
    await assertExactly(pages.bob, general, 'bob #general');
    await snap('room-conversation');
  });

  step('direct messages between the two', async () => {
    // alice starts a DM from the online list
    await pages.alice.click('[data-testid=online-user][data-username=bob] [data-testid=dm-button]');
    await pages.alice.waitForFunction(() => document.querySelector('[data-testid=conv-title]')?.textContent === 'bob');
    // bob shares #general with alice: known online (otherwise nothing is said)
    assert.match(await pages.alice.textContent('[data-testid=dm-presence]'), /^Online/);
    await send(pages.alice, 'psst, a private word');
    dm.push('psst, a private word');
    await waitForText(pages.alice, 'psst, a private word');
    // bob gets an unread badge on a new conversation with alice, opens it
    await pages.bob.waitForSelector('[data-testid=dm-item][data-username=alice] [data-testid=dm-unread]');
    await snap('dm-unread');
    await openDm(pages.bob, 'alice');
    await waitForText(pages.bob, 'psst, a private word');
    await send(pages.bob, 'Private answer, received.');
    dm.push('Private answer, received.');
    await Promise.all([waitForText(pages.alice, 'Private answer, received.'), waitForText(pages.bob, 'Private answer, received.')]);
    await assertExactly(pages.alice, dm, 'alice DM');
    await assertExactly(pages.bob, dm, 'bob DM');
    await snap('dm');
  });

  step('infinite scroll loads older history pages with `before`', async () => {
    await server.seedRoom('bob', users.bob, 'archive', 70, 'archived message');
    const page = pages.alice;
    await page.fill('[data-testid=join-input]', 'archive');
    await page.press('[data-testid=join-input]', 'Enter');
    await page.waitForFunction(() => document.querySelector('[data-testid=conv-title]')?.textContent === '#archive');
    await page.waitForFunction(() => document.querySelectorAll('[data-testid=message]').length === 50);
    let got = await domMessages(page);
    assert.equal(got[0].text, 'archived message 21');
    assert.equal(got.at(-1).text, 'archived message 70');
    // scroll to the top: the next (last) page comes in, then the beginning marker
    await page.$eval('[data-testid=message-list]', (el) => el.scrollTo(0, 0));
    await page.waitForSelector('[data-testid=history-start]');
    await page.waitForFunction(() => document.querySelectorAll('[data-testid=message]').length === 70);
    await assertExactly(
      page,
      Array.from({ length: 70 }, (_, i) => `archived message ${i + 1}`),
      'alice #archive',
    );
    await snap('history');
    // A new message while alice reads the beginning: what she reads stays, a control says there
    // is news below and takes her there.
    await server.seedRoom('bob', users.bob, 'archive', 1, 'archived message late');
    const below = await page.waitForSelector('[data-testid=new-below]');
    assert.match(await below.textContent(), /1 new message/);
    assert.ok(await page.$('[data-testid=history-start]'), 'the beginning of the room is still shown');
    await snap('new-below');
    await below.click();
    await waitInView(page, 'archived message late 1');
    await page.waitForSelector('[data-testid=new-below]', { state: 'detached' });
    // Scrolled up again, alice writes: she is taken down to her message.
    await scrollToTop(page);
    await send(page, 'archived message from alice');
    await waitInView(page, 'archived message from alice');
    await openRoom(page, 'general');
    await openRoom(pages.bob, 'general');
  });

  step('a 64-character room name and right-to-left text fit a phone screen', async () => {
    const page = pages.alice;
    const room = 'a-room-name-that-takes-all-of-the-sixty-four-characters-allowed.';
    assert.equal(room.length, 64);
    const rtl = 'שלום, מה שלומך?';
    await page.setViewportSize({ width: 375, height: 700 });
    try {
      await page.click('.menu-btn'); // the sidebar is a drawer there
      await page.fill('[data-testid=join-input]', room);
      await page.press('[data-testid=join-input]', 'Enter');
      await page.waitForFunction((r) => document.querySelector('[data-testid=conv-title]')?.textContent === `#${r}`, room);
      await send(page, rtl);
      elsewhere.push(rtl);
      await waitForText(page, rtl);
      const layout = await page.evaluate(() => ({
        pageWidth: document.documentElement.scrollWidth,
        leaveRight: document.querySelector('[data-testid=leave-room]').getBoundingClientRect().right,
        direction: getComputedStyle([...document.querySelectorAll('[data-testid=message] .message-content')].at(-1)).direction,
      }));
      await snap('phone-long-room-name');
      assert.ok(layout.pageWidth <= 375, `the page scrolls sideways: ${layout.pageWidth}px wide`);
      assert.ok(layout.leaveRight <= 375, 'the Leave button is off-screen');
      assert.equal(layout.direction, 'rtl', 'Hebrew is not laid out right to left');
      await page.click('[data-testid=leave-room]');
    } finally {
      await page.setViewportSize({ width: 1280, height: 800 });
    }
    await openRoom(page, 'general');
  });

  step('links, code and emphasis are shown as such, HTML never runs, mentions of me stand out', async () => {
    for (const page of [pages.alice, pages.bob]) await joinRoom(page, 'formatting');
    const target = `${server.base}/?opened-from-a-link`;
    const lines = [
      `The docs: ${target}.`,
      'javascript:alert(1) <img src=x onerror="window.__xss=1"> <script>window.__xss=2</script>',
      '**bold**, _italic_ and `code https://example.com/not-a-link`',
      '```\nconst url = "https://example.com/in-a-block";\n```',
      '@Alice have a look, and @room too',
    ];
    for (const text of lines) {
      await send(pages.bob, text);
      elsewhere.push(text);
    }
    for (const page of [pages.alice, pages.bob]) await waitForText(page, 'const url = "https://example.com/in-a-block";');
    await waitForText(pages.alice, '@Alice have a look, and @room too');
    const page = pages.alice;
    const seen = await page.evaluate(() => {
      const contents = [...document.querySelectorAll('[data-testid=message] .message-content')].slice(-5);
      const text = (sel) => [...document.querySelectorAll(sel)].map((e) => e.textContent);
      return {
        links: [...document.querySelectorAll('[data-testid=message] a')].map((a) => ({
          href: a.getAttribute('href'),
          text: a.textContent,
          target: a.getAttribute('target'),
          rel: a.getAttribute('rel'),
        })),
        html: contents[1].textContent,
        elements: document.querySelectorAll('.message-content img, .message-content script').length,
        xss: window.__xss ?? null,
        strong: text('.message-content strong'),
        em: text('.message-content em'),
        code: text('.message-content code'),
        linksInCode: document.querySelectorAll('.message-content code a, .message-content pre a').length,
        pre: text('.message-content pre'),
        mentions: [...document.querySelectorAll('[data-testid=mention]')].map((m) => [m.dataset.mention, m.textContent]),
        markedForMe: contents[4].closest('[data-testid=message]').classList.contains('mentions-me'),
      };
    });
    await snap('markup');
    assert.deepEqual(seen.links, [{ href: target, text: target, target: '_blank', rel: 'noopener noreferrer' }]);
    assert.equal(seen.html, lines[1], 'HTML is shown as the text it is');
    assert.equal(seen.elements, 0, 'HTML in a message made elements');
    assert.equal(seen.xss, null, 'a script in a message ran');
    assert.deepEqual(seen.strong, ['bold']);
    assert.deepEqual(seen.em, ['italic']);
    assert.deepEqual(seen.code, ['code https://example.com/not-a-link', 'const url = "https://example.com/in-a-block";']);
    assert.equal(seen.linksInCode, 0, 'a link inside code');
    assert.deepEqual(seen.pre, ['const url = "https://example.com/in-a-block";']);
    assert.deepEqual(seen.mentions, [
      ['me', '@Alice'],
      ['room', '@room'],
    ]);
    assert.ok(seen.markedForMe, 'the message mentioning alice is not marked for her');
    // bob wrote it: @Alice is not him, @room is everyone
    const bobSees = await pages.bob.$$eval('[data-testid=mention]', (els) => els.map((m) => m.dataset.mention));
    assert.deepEqual(bobSees, ['room']);
    assert.equal(await pages.bob.locator('[data-testid=message].mentions-me').count(), 0);
    // the link opens in a new tab that cannot reach back into the chat page
    const [tab] = await Promise.all([page.context().waitForEvent('page'), page.click('[data-testid=message] a')]);
    await tab.waitForLoadState('domcontentloaded');
    assert.equal(tab.url(), target);
    assert.deepEqual(await tab.evaluate(() => [window.opener, document.referrer]), [null, '']);
    await tab.close();
    for (const p of [pages.alice, pages.bob]) await openRoom(p, 'general');
  });

  step('the newest message stays in view when the window is resized; a reader scrolled up keeps their place', async () => {
    const page = pages.alice;
    const newest = 'archived message from alice';
    await openRoom(page, 'archive');
    await waitInView(page, newest);
    try {
      // shorter, then narrower (the text flows onto more lines): still the newest message at the
      // bottom, as soon as the page is drawn at its new size (a later update of the list would hide the bug)
      await page.setViewportSize({ width: 1280, height: 500 });
      assert.ok(await inViewNow(page, newest), 'the newest message is hidden once the window is shorter');
      await page.setViewportSize({ width: 375, height: 500 });
      assert.ok(await inViewNow(page, newest), 'the newest message is hidden once the window is narrower');
      await snap('resized-narrow');
      // scrolled up to an older message: resizing leaves it where it is read
      const reading = await page.$$eval('[data-testid=message]', (els) => {
        els[20].scrollIntoView({ block: 'center' });
        return els[20].querySelector('.message-content').textContent;
      });
      await frames(page);
      await page.setViewportSize({ width: 1280, height: 800 });
      assert.ok(await inViewNow(page, reading), 'the message read is gone after a resize');
      assert.equal(await page.locator('[data-testid=new-below]').count(), 0);
      const newestShown = await page.evaluate((t) => {
        const list = document.querySelector('[data-testid=message-list]').getBoundingClientRect();
        const m = [...document.querySelectorAll('[data-testid=message] .message-content')].find((e) => e.textContent === t);
        return m.getBoundingClientRect().top < list.bottom;
      }, newest);
      assert.ok(!newestShown, 'the reader scrolled up was taken down to the newest message');
    } finally {
      await page.setViewportSize({ width: 1280, height: 800 });
      await openRoom(page, 'general');
    }
  });

  step('on narrow screens the list of who is online opens from the header, Escape closes it', async () => {
    const page = pages.alice;
    const panel = page.locator('[data-testid=members-panel]');
    const toggle = page.locator('[data-testid=members-toggle]');
    assert.ok(await panel.isVisible(), 'beside the conversation on a wide screen');
    assert.ok(!(await toggle.isVisible()), 'no toggle needed on a wide screen');
    try {
      await page.setViewportSize({ width: 800, height: 700 });
      await panel.waitFor({ state: 'hidden' });
      assert.equal(await toggle.getAttribute('aria-expanded'), 'false');
      await toggle.click();
      await panel.waitFor({ state: 'visible' });
      assert.equal(await toggle.getAttribute('aria-expanded'), 'true');
      await panel.locator('[data-testid=online-user][data-username=bob]').waitFor();
      assert.ok(await panel.evaluate((el) => el.contains(document.activeElement)), 'focus is not in the list');
      await snap('members-drawer');
      await page.keyboard.press('Escape');
      await panel.waitFor({ state: 'hidden' });
      assert.equal(await toggle.getAttribute('aria-expanded'), 'false');
      assert.ok(await toggle.evaluate((el) => el === document.activeElement), 'focus is not back on the button');
      // on a phone: open it, write to bob from it
      await page.setViewportSize({ width: 375, height: 700 });
      await toggle.click();
      await panel.waitFor({ state: 'visible' });
      await snap('members-drawer-phone');
      await panel.locator('[data-testid=online-user][data-username=bob] [data-testid=dm-button]').click();
      await page.waitForFunction(() => document.querySelector('[data-testid=conv-title]')?.textContent === 'bob');
      await panel.waitFor({ state: 'hidden' });
      const layout = await page.evaluate(() => ({
        pageWidth: document.documentElement.scrollWidth,
        toggleRight: document.querySelector('[data-testid=members-toggle]').getBoundingClientRect().right,
      }));
      assert.ok(layout.pageWidth <= 375 && layout.toggleRight <= 375, `off-screen: ${JSON.stringify(layout)}`);
    } finally {
      await page.setViewportSize({ width: 1280, height: 800 });
      await openRoom(page, 'general');
    }
  });

  step('graceful restart (SIGTERM) mid-conversation: nothing lost, nothing doubled', async () => {
    // Read the first countdown while gunicorn is still stopping: once it has exited (3-4 s
    // later) the pages may have failed a few attempts and be showing a longer backoff.
    const stopped = server.kill('SIGTERM');
    await Promise.all([waitForStatus(pages.alice, 'reconnecting'), waitForStatus(pages.bob, 'reconnecting')]);
    const banner = await pages.alice.waitForSelector('[data-testid=conn-banner]');
    // the countdown counts from now (1–3 s after a restart), not from when the page was opened
    const countdown = Number((await banner.textContent()).match(/in (\d+)s/)?.[1] ?? 0);
    assert.ok(countdown <= 3, `the banner says the next attempt is in ${countdown}s`);
    await stopped;
    // who is online is not known meanwhile: no stale count, no "nobody here"
    await pages.alice.waitForSelector('[data-testid=online-unknown]');
    assert.equal(await pages.alice.textContent('[data-testid=online-count]'), '–');
    assert.equal(
      await pages.alice.textContent('[data-testid=room-item][data-room=general] [data-testid=room-online]'),
      '–',
    );
    // written while the server is down: queued, shown as pending
    await send(pages.alice, 'written while the server restarts');
    general.push('written while the server restarts');
    await pages.alice.waitForSelector('[data-testid=pending-message]');
    // leaving the room would discard it: alice is asked first, says no, and stays
    const question = nextDialog(pages.alice, false);
    await pages.alice.click('[data-testid=leave-room]');
    assert.match(await question, /1 message you wrote in #general has not been sent yet/);
    assert.equal(await pages.alice.textContent('[data-testid=conv-title]'), '#general');
    await send(pages.bob, 'me too, offline');
    general.push('me too, offline');
    await snap('reconnecting');
    await server.start();
    await Promise.all([waitForStatus(pages.alice, 'open'), waitForStatus(pages.bob, 'open')]);
    for (const p of [pages.alice, pages.bob]) {
      await waitForText(p, 'written while the server restarts');
      await waitForText(p, 'me too, offline');
      await waitNoPending(p);
    }
    // the two offline messages may be stored in either order: compare as the server ordered them
    const order = (await domMessages(pages.alice)).map((m) => m.text);
    general.splice(-2, 2, ...order.slice(-2));
    await assertExactly(pages.alice, general, 'alice #general after restart');
    await assertExactly(pages.bob, general, 'bob #general after restart');
    // both online again
    await pages.alice.waitForSelector('[data-testid=online-user][data-username=bob]');
    await snap('after-graceful-restart');
  });

  step('crash (SIGKILL) while messages are in flight: nothing lost, nothing doubled', async () => {
    await openDm(pages.bob, 'alice');
    // alice fires a burst; the server dies in the middle of it
    for (let i = 1; i <= 6; i++) {
      await send(pages.alice, `burst ${i}`);
      general.push(`burst ${i}`);
      if (i === 3) await server.kill('SIGKILL');
    }
    await waitForStatus(pages.alice, 'reconnecting');
    await waitForStatus(pages.bob, 'reconnecting');
    // a DM from bob while down
    await send(pages.bob, 'are you still there?');
    dm.push('are you still there?');
    await server.start();
    await Promise.all([waitForStatus(pages.alice, 'open'), waitForStatus(pages.bob, 'open')]);
    await waitNoPending(pages.alice);
    await waitNoPending(pages.bob);
    for (let i = 1; i <= 6; i++) await waitForText(pages.alice, `burst ${i}`);
    await assertExactly(pages.alice, general, 'alice #general after crash');
    await openRoom(pages.bob, 'general');
    for (let i = 1; i <= 6; i++) await waitForText(pages.bob, `burst ${i}`);
    await assertExactly(pages.bob, general, 'bob #general after crash');
    // DMs caught up on both sides
    await openDm(pages.alice, 'bob');
    await waitForText(pages.alice, 'are you still there?');
    await assertExactly(pages.alice, dm, 'alice DM after crash');
    await openDm(pages.bob, 'alice');
    await assertExactly(pages.bob, dm, 'bob DM after crash');
    await snap('after-crash');
  });

  step('a fast sender is paced, not refused: complete and in order', async () => {
    await openRoom(pages.alice, 'general');
    await openRoom(pages.bob, 'general');
    for (let i = 1; i <= 30; i++) {
      await send(pages.alice, `rapid ${i}`);
      general.push(`rapid ${i}`);
    }
    await waitNoPending(pages.alice);
    await waitForText(pages.bob, 'rapid 30');
    await assertExactly(pages.alice, general, 'alice #general after a burst');
    await assertExactly(pages.bob, general, 'bob #general after a burst');
    assert.equal(await pages.alice.locator('[data-testid=toast]').count(), 0, 'no error toast expected');
  });

  step('database outage: the error is shown, the message survives a reload and is delivered once it is back', async () => {
    await db.block();
    try {
      await send(pages.alice, 'sent during a database outage');
      general.push('sent during a database outage');
      const toast = await pages.alice.waitForSelector('[data-testid=toast]');
      assert.match(await toast.textContent(), /database/i);
      await pages.alice.waitForSelector('[data-testid=pending-message]');
      await snap('database-outage');
      // A reload meanwhile does not lose it: the tab kept it (sessionStorage) and sends it again.
      await pages.alice.reload();
      await pages.alice.waitForSelector('[data-testid=pending-message]');
    } finally {
      await db.unblock();
    }
    for (const p of [pages.alice, pages.bob]) await waitForText(p, 'sent during a database outage');
    await waitNoPending(pages.alice);
    await assertExactly(pages.alice, general, 'alice #general after the outage');
    await assertExactly(pages.bob, general, 'bob #general after the outage');
  });

  step('the database holds every message exactly once', async () => {
    // as JSON: a message of several lines is one line of psql's output
    const rows = await db.query(
      "SELECT to_json(content), count(*) FROM messages WHERE content NOT LIKE 'archived message %' GROUP BY content",
    );
    const counts = Object.fromEntries(rows.map(([content, n]) => [JSON.parse(content), Number(n)]));
    for (const text of [...general, ...dm, ...elsewhere]) assert.equal(counts[text], 1, `stored ${counts[text] ?? 0} times: ${text}`);
    assert.equal(rows.length, general.length + dm.length + elsewhere.length, 'unexpected extra messages stored');
  });

  step('a refused token sends the user back to the sign-in page', async () => {
    const page = pages.alice;
    await page.evaluate(() => {
      const s = JSON.parse(localStorage.getItem('chat.session'));
      localStorage.setItem('chat.session', JSON.stringify({ ...s, token: 'not.a.valid-token' }));
    });
    await page.reload();
    const notice = await page.waitForSelector('.login-notice');
    assert.match(await notice.textContent(), /session has expired/i);
    await snap('session-expired');
    // signing in again restores the rooms, their history and the conversation that was open
    await signIn('alice', users.alice);
    await page.waitForFunction(() => document.querySelector('[data-testid=conv-title]')?.textContent === '#general');
    await waitForText(page, 'sent during a database outage');
    await assertExactly(page, general, 'alice #general after signing in again');
  });

  step('an expired session keeps what was written offline: sent once signed in again', async () => {
    // The server goes away; alice writes meanwhile; it comes back signing with another secret,
    // so every token it handed out is refused (4001), as after an expiry: both are signed out.
    await server.kill('SIGKILL');
    await Promise.all([waitForStatus(pages.alice, 'reconnecting'), waitForStatus(pages.bob, 'reconnecting')]);
    const text = 'written offline, then the session expired';
    await send(pages.alice, text);
    general.push(text);
    await pages.alice.waitForSelector('[data-testid=pending-message]');
    // a draft stays with its conversation when switching, and through signing in again
    const draft = 'a draft, not sent yet';
    await composer(pages.alice).fill(draft);
    await openDm(pages.alice, 'bob');
    assert.equal(await composer(pages.alice).inputValue(), '');
    await openRoom(pages.alice, 'general');
    assert.equal(await composer(pages.alice).inputValue(), draft);
    server.jwtSecret = randomBytes(32).toString('hex');
    await server.start();
    const notice = await pages.alice.waitForSelector('.login-notice');
    assert.match(await notice.textContent(), /session has expired.*unsent message/i);
    await pages.bob.waitForSelector('.login-notice');
    await snap('session-expired-unsent');
    await signInHere('alice', users.alice);
    assert.equal(await composer(pages.alice).inputValue(), draft);
    await composer(pages.alice).fill('');
    await waitForText(pages.alice, text);
    await waitNoPending(pages.alice);
    await assertExactly(pages.alice, general, 'alice #general after the session expired');
    await signInHere('bob', users.bob);
    await openRoom(pages.bob, 'general');
    await waitForText(pages.bob, text);
    await assertExactly(pages.bob, general, 'bob #general after the session expired');
    const rows = await db.query(`SELECT count(*) FROM messages WHERE content = '${text}'`);
    assert.equal(Number(rows[0][0]), 1, 'stored once');
  });

  step('a new device lists the past DM conversations (server list), loaded when opened', async () => {
    // A fresh browser context has no remembered conversations: only the server's list knows them.
    const page = await newDevicePage(browser, 'bob-new-device');
    try {
      pages['bob-new-device'] = page;
      await signIn('bob', users.bob, page);
      await openDm(page, 'alice');
      await waitForText(page, dm.at(-1));
      await assertExactly(page, dm, 'bob DM on a new device');
      await snap('new-device');
    } finally {
      delete pages['bob-new-device'];
      await page.context().close();
    }
  });
});
