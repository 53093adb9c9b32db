// Browser test of the protocol v2 features of the chat page (issue #21) against the real server
// and a real PostgreSQL, as people use them: two users, alice on two devices (two browser
// contexts: her laptop and her phone) and bob. Unread counts and mentions in the sidebar and the
// tab title, cleared on both devices when read on one; the new-messages line and the jump to the
// first unread message; edit (button, Up key), delete (confirmed), reactions, search, DM typing.
//
// Run: node --test v2.e2e.test.mjs   (after `make -C web build`; the server's .venv must exist)
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { WAIT, composer, joinRoom, openRoom, send } from './lib/dom.mjs';
import { until } from './lib/harness.mjs';
import { DESKTOP, newDevicePage, startStage, stopStage } from './lib/stage.mjs';
import { stepsWithScreenshots } from './lib/steps.mjs';


const users = { alice: randomBytes(9).toString('base64url'), bob: randomBytes(9).toString('base64url') };
/** @type {Record<string, import('playwright-core').Page>} the devices: alice's laptop and phone, bob's */
const pages = {};
const who = { laptop: 'alice', phone: 'alice', bob: 'bob' };
/** alice's phone: a smaller window than a desktop's; at 1,000 px, who is online is a drawer there. */
const PHONE = { width: 1000, height: 760 };
let db;
let server;
let browser;

const { snap, step } = stepsWithScreenshots(pages, 'v2-');

// ----- DOM helpers (everything waits on the DOM, nothing sleeps) -----------------------------

/** The id of the (newest) message whose text is `text` in the open conversation, once shown. */
async function idOf(page, text) {
  const handle = await page.waitForFunction(
    (t) => {
      const m = [...document.querySelectorAll('[data-testid=message]')].filter((e) => e.querySelector('.message-content')?.textContent === t).at(-1);
      return m ? Number(m.getAttribute('data-id')) : null;
    },
    text,
  );
  return handle.jsonValue();
}

const message = (page, id) => page.locator(`[data-testid=message][data-id="${id}"]`);

/** Whether message `id` is inside the visible part of the message list. */
function inView(page, id) {
  return page.evaluate((i) => {
    const list = document.querySelector('[data-testid=message-list]').getBoundingClientRect();
    const m = document.querySelector(`[data-testid=message][data-id="${i}"]`)?.getBoundingClientRect();
    return !!m && m.top >= list.top - 1 && m.bottom <= list.bottom + 1;
  }, id);
}

async function signIn(page, name) {
  await page.goto(server.base + '/');
  await page.fill('input[name=username]', name);
  await page.fill('input[name=password]', users[name]);
  await page.click('button[type=submit]');
  await page.waitForSelector('[data-testid=conn-status][data-status=open]');
}

/** The text of a room's badge in the sidebar ('' when there is none). */
const badge = (page, room, testid) =>
  page.evaluate(([r, t]) => document.querySelector(`[data-testid=room-item][data-room="${r}"] [data-testid=${t}]`)?.textContent ?? '', [room, testid]);

function waitBadge(page, room, testid, text) {
  return until(`${testid} of #${room} to read "${text}"`, async () => (await badge(page, room, testid)) === text, { timeoutMs: WAIT });
}

// ----- the scenario -----------------------------------------------------------------------------

describe('v2 features of the chat page, two users and two devices', { timeout: 240_000 }, () => {
  before(async () => {
    ({ db, server, browser } = await startStage(users));
    for (const dev of Object.keys(who)) pages[dev] = await newDevicePage(browser, dev, dev === 'phone' ? PHONE : DESKTOP);
  });

  after(() => stopStage({ db, server, browser }));

  step('alice on two devices and bob sign in; alice reads elsewhere', async () => {
    for (const [dev, name] of Object.entries(who)) {
      await signIn(pages[dev], name);
      await pages[dev].waitForFunction(() => document.querySelector('[data-testid=conv-title]')?.textContent === '#general');
    }
    for (const dev of ['laptop', 'phone']) await joinRoom(pages[dev], 'side');
  });

  step('unread and mention badges and the tab title count on both devices, and clear on both when read on one', async () => {
    await send(pages.bob, 'first news');
    await send(pages.bob, 'a question for @alice');
    for (const dev of ['laptop', 'phone']) {
      await waitBadge(pages[dev], 'general', 'room-unread', '2');
      await waitBadge(pages[dev], 'general', 'mention-badge', '@1');
      await pages[dev].waitForFunction(() => document.title === '(2) Chat');
    }
    // bob wrote them: nothing unread for him
    assert.equal(await badge(pages.bob, 'general', 'room-unread'), '');
    await snap('unread');
    // alice reads #general on her laptop: the "new messages" line is above bob's first news
    await openRoom(pages.laptop, 'general');
    const first = await idOf(pages.laptop, 'first news');
    const lineBefore = await pages.laptop.evaluate(
      () => {
        let e = document.querySelector('[data-testid=unread-line]')?.nextElementSibling;
        while (e && e.getAttribute('data-testid') !== 'message') e = e.nextElementSibling;
        return e?.getAttribute('data-id') ?? null;
      },
    );
    assert.equal(Number(lineBefore), first, 'the new-messages line is not right above the first unread message');
    for (const dev of ['laptop', 'phone']) {
      await waitBadge(pages[dev], 'general', 'room-unread', '');
      await waitBadge(pages[dev], 'general', 'mention-badge', '');
      await pages[dev].waitForFunction(() => document.title === 'Chat');
    }
    await snap('read-on-laptop');
  });

  step('the jump goes to the first unread message, loading older pages to reach it', async () => {
    await openRoom(pages.laptop, 'side');
    await server.seedRoom('bob', users.bob, 'general', 60, 'flood');
    await waitBadge(pages.laptop, 'general', 'room-unread', '60');
    await openRoom(pages.laptop, 'general');
    // the newest message is shown; the first unread one is 60 messages up (not even loaded)
    const newest = await idOf(pages.laptop, 'flood 60');
    await until('the newest message in view', () => inView(pages.laptop, newest));
    await pages.laptop.click('[data-testid=jump-unread]');
    const first = await idOf(pages.laptop, 'flood 1');
    await pages.laptop.waitForSelector(`[data-testid=message][data-id="${first}"][data-highlighted]`);
    await until('the first unread message in view', () => inView(pages.laptop, first));
    assert.ok(await pages.laptop.$('[data-testid=unread-line]'), 'no new-messages line');
    await snap('jumped');
  });

  step('edit with the button and with the Up key: the other user sees the new text, marked edited', async () => {
    const laptop = pages.laptop;
    await openRoom(pages.phone, 'general');
    await send(laptop, 'a tpyo here');
    const id = await idOf(laptop, 'a tpyo here');
    await message(laptop, id).hover();
    await message(laptop, id).locator('[data-testid=edit-button]').click();
    const input = laptop.locator('[data-testid=edit-input]');
    assert.equal(await input.inputValue(), 'a tpyo here');
    await input.fill('a typo fixed');
    await input.press('Enter');
    await pages.bob.waitForFunction(
      (i) => {
        const m = document.querySelector(`[data-testid=message][data-id="${i}"]`);
        return m?.querySelector('.message-content')?.textContent === 'a typo fixed' && !!m.querySelector('[data-testid=edited]');
      },
      id,
    );
    // Up on the empty composer edits my last message
    await send(laptop, 'second draft');
    const id2 = await idOf(laptop, 'second draft');
    await composer(laptop).press('ArrowUp');
    await laptop.waitForFunction(() => document.activeElement?.getAttribute('data-testid') === 'edit-input');
    assert.equal(await input.inputValue(), 'second draft');
    await input.fill('second, final');
    await input.press('Enter');
    for (const page of [laptop, pages.bob, pages.phone]) {
      await page.waitForFunction((i) => document.querySelector(`[data-testid=message][data-id="${i}"] .message-content`)?.textContent === 'second, final', id2);
    }
    await snap('edited');
  });

  step('delete asks first; once confirmed, both users see a tombstone', async () => {
    const laptop = pages.laptop;
    const id = await idOf(laptop, 'second, final');
    await message(laptop, id).hover();
    await message(laptop, id).locator('[data-testid=delete-button]').click();
    await laptop.waitForSelector('[data-testid=confirm-dialog][open]');
    await snap('delete-confirm');
    await laptop.click('[data-testid=confirm-cancel]');
    await laptop.waitForSelector('[data-testid=confirm-dialog]', { state: 'detached' });
    assert.equal(await message(pages.bob, id).locator('[data-testid=tombstone]').count(), 0, 'deleted without confirmation');
    await message(laptop, id).hover();
    await message(laptop, id).locator('[data-testid=delete-button]').click();
    await laptop.click('[data-testid=confirm-ok]');
    for (const page of [laptop, pages.bob]) await message(page, id).locator('[data-testid=tombstone]').waitFor();
    assert.ok(!(await message(pages.bob, id).textContent()).includes('second, final'), 'the deleted text is still shown');
  });

  step('reactions: picked from the palette, chips say who reacted, a click on mine takes it back', async () => {
    await openRoom(pages.phone, 'general');
    const id = await idOf(pages.bob, 'a typo fixed');
    await message(pages.bob, id).hover();
    await message(pages.bob, id).locator('[data-testid=react-button]').click();
    await message(pages.bob, id).locator('[data-testid=emoji-option][data-emoji="👍"]').click();
    const chip = (page) => message(page, id).locator('[data-testid=reaction-chip][data-emoji="👍"]');
    await chip(pages.laptop).waitFor();
    assert.equal((await chip(pages.laptop).textContent()).trim(), '👍 1');
    assert.match(await chip(pages.laptop).getAttribute('title'), /^bob reacted with 👍$/);
    // alice adds hers with the chip; both see two, named
    await chip(pages.laptop).click();
    await until('two thumbs for bob', async () => (await chip(pages.bob).getAttribute('title')) === 'you, alice reacted with 👍');
    assert.equal((await chip(pages.bob).textContent()).trim(), '👍 2');
    await until('two thumbs on the phone', async () => (await chip(pages.phone).getAttribute('title').catch(() => '')) === 'bob, you reacted with 👍');
    await snap('reactions');
    // bob takes his back
    await chip(pages.bob).click();
    await until('bob unreacted', async () => (await chip(pages.laptop).getAttribute('title')) === 'you reacted with 👍');
    assert.equal(await chip(pages.bob).getAttribute('aria-pressed'), 'false');
  });

  step("a palette opened over the messages below takes every one of its clicks", async () => {
    // It opens downwards, over the next messages: their toolbars, shown as the pointer
    // crosses them (or there unseen), must not take the clicks meant for its emoji.
    const bob = pages.bob;
    const below = await bob.$$eval('[data-testid=message]', (ms) => ms.slice(-4, -1).map((m) => Number(m.getAttribute('data-id'))));
    assert.equal(below.length, 3, 'three messages with others below them');
    for (const [n, emoji] of [[0, '😢'], [1, '😮'], [2, '🎉']]) {
      const id = below[n];
      await message(bob, id).hover();
      await message(bob, id).locator('[data-testid=react-button]').click();
      await message(bob, id).locator(`[data-testid=emoji-option][data-emoji="${emoji}"]`).click({ timeout: 5000 });
      const chip = message(pages.laptop, id).locator(`[data-testid=reaction-chip][data-emoji="${emoji}"]`);
      await chip.waitFor();
      assert.match(await chip.getAttribute('title'), new RegExp(`^bob reacted with ${emoji}$`));
    }
  });

  step('search opens the conversation at the message found, highlighted', async () => {
    const bob = pages.bob;
    await joinRoom(bob, 'elsewhere');
    await bob.click('[data-testid=search-toggle]');
    await bob.fill('[data-testid=search-input]', '"flood 3"');
    await bob.press('[data-testid=search-input]', 'Enter');
    const result = bob.locator('[data-testid=search-result]');
    await result.first().waitFor();
    assert.equal(await result.count(), 1);
    assert.match(await result.textContent(), /#general.*flood 3/s);
    await snap('search');
    const id = Number(await result.getAttribute('data-id'));
    await result.click();
    await bob.waitForFunction(() => document.querySelector('[data-testid=conv-title]')?.textContent === '#general');
    await bob.waitForSelector(`[data-testid=message][data-id="${id}"][data-highlighted]`);
    await until('the message found in view', () => inView(bob, id));
    await snap('search-opened');
    await bob.click('[data-testid=search-close]');
  });

  step('typing in a DM shows on the other side', async () => {
    const laptop = pages.laptop;
    await laptop.click('[data-testid=online-user][data-username=bob] [data-testid=dm-button]');
    await laptop.waitForFunction(() => document.querySelector('[data-testid=conv-title]')?.textContent === 'bob');
    await send(laptop, 'are you there?');
    await pages.bob.click('[data-testid=dm-item][data-username=alice]');
    await pages.bob.waitForFunction(() => document.querySelector('[data-testid=conv-title]')?.textContent === 'alice');
    // keeps typing (an indicator lasts a few seconds) until bob sees it
    let n = 0;
    await until(
      'bob to see alice typing',
      async () => {
        await composer(laptop).fill(`I am writing${'.'.repeat(++n % 5)}`);
        return (await pages.bob.textContent('[data-testid=typing]')).includes('alice is typing');
      },
      { timeoutMs: WAIT, intervalMs: 700 },
    );
    await snap('dm-typing');
    await send(laptop, 'done');
    await pages.bob.waitForFunction(() => !document.querySelector('[data-testid=typing]')?.textContent);
  });
});
