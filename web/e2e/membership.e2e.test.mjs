// Browser test of stored membership (issue #20) against the real server and a real PostgreSQL:
// alice on two devices (two browser contexts) and bob; carol has an account but never connects.
// The sidebar comes from the server and follows alice across her devices; rooms are created,
// found in the room browser, made private, joined by invitation and left by removal; a DM is
// started from the people picker, also with someone offline; everyone has an online dot.
//
// Run: node --test membership.e2e.test.mjs   (after `make -C web build`; the server's .venv must exist)
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { newDevicePage, startStage, stopStage } from './lib/stage.mjs';
import { stepsWithScreenshots } from './lib/steps.mjs';
import {
  joinRoom,
  openRoom,
  send,
  sidebarRooms,
  signIn,
  toast,
  waitForSidebar,
  waitForStatus,
  waitForText,
  waitForTitle,
} from './lib/dom.mjs';

/** How soon a room someone creates must show in another person's open room browser (ms). */
const NEW_ROOM_VISIBLE_WITHIN_MS = 8_000;

const pw = () => randomBytes(9).toString('base64url');
const users = { alice: pw(), bob: pw(), carol: pw() };

let db;
let server;
let browser;
/** alice (her first device), alice2 (her second device), bob */
const pages = {};

const { snap, step } = stepsWithScreenshots(pages, 'm');

async function newPage(who) {
  pages[who] = await newDevicePage(browser, who);
  return pages[who];
}

async function openBrowser(page) {
  await page.click('[data-testid=browse-rooms]');
  await page.waitForSelector('[data-testid=room-browser]');
}

async function closeBrowser(page) {
  await page.click('[data-testid=room-browser-close]');
  await page.waitForSelector('[data-testid=room-browser]', { state: 'detached' });
}

const browserRooms = (page) => page.$$eval('[data-testid=browser-room]', (els) => els.map((e) => e.getAttribute('data-room')));

/** Picks `username` in the open people picker `within` (typing `query`); asserts what it says of them being online. */
async function pick(page, within, query, username, online) {
  await page.fill(`${within} [data-testid=people-search]`, query);
  const person = page.locator(`${within} [data-testid=person][data-username="${username}"]`);
  await person.waitFor();
  assert.equal(await person.getAttribute('data-online'), String(online), `${username} shown ${online ? 'offline' : 'online'}`);
  await person.click();
}

describe('rooms and people across devices', { timeout: 180_000 }, () => {
  before(async () => {
    ({ db, server, browser } = await startStage(users));
  });

  after(() => stopStage({ db, server, browser }));

  step("alice's second device shows the sidebar of her first one, from the server", async () => {
    await signIn(await newPage('alice'), server.base, 'alice', users.alice);
    await waitForTitle(pages.alice, '#general'); // a new user lands in #general
    await joinRoom(pages.alice, 'projects');
    // a fresh browser context remembers nothing: only the server knows her rooms
    await signIn(await newPage('alice2'), server.base, 'alice', users.alice);
    await waitForSidebar(pages.alice2, ['general', 'projects']);
    assert.deepEqual(await sidebarRooms(pages.alice), await sidebarRooms(pages.alice2));
    await snap('two-devices');
  });

  step('a room joined or left on one device is joined or left on the other', async () => {
    await joinRoom(pages.alice2, 'design');
    await waitForSidebar(pages.alice, ['design', 'general', 'projects']);
    // its history is there on the other device too
    await send(pages.alice2, 'joined from my second device');
    await openRoom(pages.alice, 'design');
    await waitForText(pages.alice, 'joined from my second device');
    await openRoom(pages.alice2, 'projects');
    await pages.alice2.click('[data-testid=leave-room]');
    await waitForSidebar(pages.alice, ['design', 'general']);
    await waitForSidebar(pages.alice2, ['design', 'general']);
  });

  step("a room bob creates shows in alice's open room browser within a few seconds", async () => {
    await signIn(await newPage('bob'), server.base, 'bob', users.bob);
    await openBrowser(pages.alice);
    await pages.alice.waitForSelector('[data-testid=browser-room][data-room=general]');
    assert.ok(!(await browserRooms(pages.alice)).includes('bobs-corner'));
    await openBrowser(pages.bob);
    await pages.bob.fill('[data-testid=create-room-name]', 'bobs-corner');
    await pages.bob.click('[data-testid=create-room-submit]');
    await waitForTitle(pages.bob, '#bobs-corner');
    const created = Date.now();
    await pages.alice.waitForSelector('[data-testid=browser-room][data-room=bobs-corner][data-member=false]', {
      timeout: NEW_ROOM_VISIBLE_WITHIN_MS,
    });
    console.log(`# bobs-corner showed in alice's room browser ${Date.now() - created} ms after it was created`);
    await snap('room-browser');
    await closeBrowser(pages.alice);
  });

  step('alice creates a private room: on both her devices, found by nobody else', async () => {
    await openBrowser(pages.alice);
    await pages.alice.fill('[data-testid=create-room-name]', 'secret');
    await pages.alice.check('[data-testid=create-room-private]');
    await pages.alice.click('[data-testid=create-room-submit]');
    await waitForTitle(pages.alice, '#secret');
    await pages.alice.waitForSelector('[data-testid=private-room]');
    await send(pages.alice, 'only for the invited');
    await waitForText(pages.alice, 'only for the invited');
    await pages.alice2.waitForSelector('[data-testid=room-item][data-room=secret][data-private=true]');
    // bob's browser, refreshed since (it lists a room created after), has no #secret
    await openBrowser(pages.bob);
    await server.seedRoom('alice', users.alice, 'later-public', 1, 'made after #secret');
    await pages.bob.waitForSelector('[data-testid=browser-room][data-room=later-public]');
    assert.ok(!(await browserRooms(pages.bob)).includes('secret'), 'a non-member finds the private room');
    await closeBrowser(pages.bob);
    // nor can he join it by its name
    await pages.bob.fill('[data-testid=join-input]', 'secret');
    await pages.bob.press('[data-testid=join-input]', 'Enter');
    await toast(pages.bob, /not found/);
    await pages.bob.waitForSelector('[data-testid=room-item][data-room=secret]', { state: 'detached' });
    await snap('private-created');
  });

  step('alice invites bob: the room appears on his page, they talk; she removes him, his page drops it and says so', async () => {
    await pages.alice.click('[data-testid=invite-button]');
    await pick(pages.alice, '[data-testid=invite-popover]', 'bo', 'bob', true);
    await toast(pages.bob, /alice added you to #secret/);
    await pages.bob.waitForSelector('[data-testid=room-item][data-room=secret][data-private=true]');
    await openRoom(pages.bob, 'secret');
    await waitForText(pages.bob, 'only for the invited');
    await send(pages.bob, 'thanks for having me');
    await waitForText(pages.alice, 'thanks for having me');
    await pages.alice.waitForSelector('[data-testid=online-user][data-username=bob][data-online=true]');
    // the owner may remove on her other device too (join_ack names the owner); bob may not
    await openRoom(pages.alice2, 'secret');
    await pages.alice2.waitForSelector('[data-testid=online-user][data-username=bob] [data-testid=remove-member]');
    assert.equal((await pages.bob.$$('[data-testid=remove-member]')).length, 0, 'a member is offered to remove');
    await snap('invited');
    await pages.alice.click('[data-testid=online-user][data-username=bob] [data-testid=remove-member]');
    const asked = await pages.alice.waitForSelector('[data-testid=confirm-dialog]');
    assert.match(await asked.textContent(), /Remove bob from #secret\?/);
    await pages.alice.click('[data-testid=confirm-ok]');
    await toast(pages.bob, /removed from #secret/);
    await pages.bob.waitForSelector('[data-testid=room-item][data-room=secret]', { state: 'detached' });
    assert.notEqual(await pages.bob.textContent('[data-testid=conv-title]'), '#secret');
    await pages.alice.waitForSelector('[data-testid=online-user][data-username=bob]', { state: 'detached' });
    await snap('removed');
  });

  step('on a phone the room browser and the invite picker fit the screen', async () => {
    const page = pages.alice;
    await page.setViewportSize({ width: 375, height: 700 });
    try {
      await page.click('.menu-btn');
      await openBrowser(page);
      // her private room is listed to her, a member
      await page.waitForSelector('[data-testid=browser-room][data-room=secret][data-member=true]');
      const fits = () =>
        page.evaluate(() => {
          const open = document.querySelector('[data-testid=room-browser], [data-testid=invite-popover]').getBoundingClientRect();
          return { pageWidth: document.documentElement.scrollWidth, left: open.left, right: open.right };
        });
      let box = await fits();
      assert.ok(box.pageWidth <= 375 && box.left >= 0 && box.right <= 375, `the room browser: ${JSON.stringify(box)}`);
      await snap('phone-room-browser');
      await closeBrowser(page);
      await page.click('.menu-btn'); // opening the browser closed the drawer
      await openRoom(page, 'general');
      await page.click('[data-testid=invite-button]');
      await page.waitForSelector('[data-testid=invite-popover] [data-testid=person]');
      box = await fits();
      assert.ok(box.pageWidth <= 375 && box.left >= 0 && box.right <= 375, `the invite picker: ${JSON.stringify(box)}`);
      await snap('phone-invite');
      await page.keyboard.press('Escape');
      await page.waitForSelector('[data-testid=invite-popover]', { state: 'detached' });
    } finally {
      await page.setViewportSize({ width: 1280, height: 800 });
    }
  });

  step('a new DM from the people picker, to carol who never connected: offline, and written to all the same', async () => {
    await pages.alice.click('[data-testid=new-dm]');
    // everyone, online people first
    const everyone = pages.alice.locator('[data-testid=dm-people] [data-testid=person]');
    await pages.alice.waitForFunction(() => document.querySelectorAll('[data-testid=dm-people] [data-testid=person]').length === 2);
    assert.deepEqual(
      await everyone.evaluateAll((els) => els.map((e) => [e.dataset.username, e.dataset.online])),
      [
        ['bob', 'true'],
        ['carol', 'false'],
      ],
    );
    await snap('people-picker');
    await pick(pages.alice, '[data-testid=dm-people]', 'car', 'carol', false);
    await waitForTitle(pages.alice, 'carol');
    await send(pages.alice, 'hello carol, for when you come');
    await waitForText(pages.alice, 'hello carol, for when you come');
    // online dots in the DM list: carol offline (as the server said), bob online (a room we share)
    await pages.alice.waitForSelector('[data-testid=dm-item][data-username=carol][data-online=false]');
    assert.match(await pages.alice.textContent('[data-testid=dm-presence]'), /^Offline/);
    await pages.bob.click('[data-testid=new-dm]');
    await pick(pages.bob, '[data-testid=dm-people]', 'ali', 'alice', true);
    await waitForTitle(pages.bob, 'alice');
    await pages.bob.waitForSelector('[data-testid=dm-item][data-username=alice][data-online=true]');
    // the conversation with carol is on alice's other device too
    await pages.alice2.waitForSelector('[data-testid=dm-item][data-username=carol]');
    await snap('dm-offline');
    const rows = await db.query("SELECT count(*) FROM messages WHERE content = 'hello carol, for when you come'");
    assert.equal(Number(rows[0][0]), 1);
  });

  step('a new tab of the browser opens signed in; signing out there signs out the other tab too', async () => {
    const tab = await pages.bob.context().newPage();
    pages.bobTab = tab;
    await tab.goto(server.base + '/');
    await waitForStatus(tab, 'open');
    assert.equal(await tab.textContent('[data-testid=me]'), 'bob');
    await waitForSidebar(tab, await sidebarRooms(pages.bob));
    await tab.click('[data-testid=sign-out]');
    await tab.waitForSelector('[data-testid=login-form]');
    await pages.bob.waitForSelector('[data-testid=login-form]');
    // alice, in another browser, is still signed in
    await waitForStatus(pages.alice, 'open');
    assert.equal(await pages.alice.textContent('[data-testid=me]'), 'alice');
  });
});
