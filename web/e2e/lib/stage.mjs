// The stage every browser test file sets up before its steps and takes down after them: a
// throwaway database with the test's users, the real server on a free port, one Chromium.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { WAIT } from './dom.mjs';
import { ChatServer, Database, freePort, launchChromium, WEB_DIST } from './harness.mjs';

/** The window of a desktop device, unless a test needs another size. */
export const DESKTOP = { width: 1280, height: 800 };

/**
 * Creates the database (schema loaded, `users`: name -> password), starts the server on a free
 * port and launches Chromium; resolves to `{ db, server, browser }`. What was made before a
 * failure is taken down again here: the caller's `after` never sees a half-built stage.
 */
export async function startStage(users) {
  assert.ok(existsSync(path.join(WEB_DIST, 'index.html')), `no ${WEB_DIST}/index.html: run make -C web build`);
  const stage = { db: new Database(), server: null, browser: null };
  try {
    await stage.db.create();
    stage.server = new ChatServer({ db: stage.db, port: await freePort() });
    for (const [name, password] of Object.entries(users)) await stage.server.createUser(name, password);
    await stage.server.start();
    stage.browser = await launchChromium(chromium);
    return stage;
  } catch (e) {
    await stopStage(stage);
    throw e;
  }
}

/** Takes down what `startStage` made (any part of it may be missing); never throws, so every part goes. */
export async function stopStage({ db, server, browser }) {
  await browser?.close().catch(() => {});
  await server?.kill('SIGKILL').catch(() => {});
  await db?.drop().catch((e) => console.error('dropdb failed:', e.message));
}

/**
 * A page in a browser context of its own (a device that remembers nothing) with the tests'
 * timeout; errors thrown in it are logged under `name`, since they do not fail the test by themselves.
 */
export async function newDevicePage(browser, name, viewport = DESKTOP) {
  const ctx = await browser.newContext({ viewport });
  const page = await ctx.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (e) => console.error(`[${name}] page error:`, e.message));
  return page;
}
