// DOM helpers of the chat page for the browser tests: everything waits on the DOM, nothing sleeps.

export const WAIT = 30_000;

export const composer = (page) => page.locator('[data-testid=composer] textarea');

/** Sends `text` from the open conversation's composer; resolves once the hook took it. */
export async function send(page, text) {
  await composer(page).fill(text);
  await composer(page).press('Enter');
  await page.waitForFunction(() => document.querySelector('[data-testid=composer] textarea')?.value === '');
}

export function waitForText(page, text, timeout = WAIT) {
  return page.waitForFunction(
    (t) => [...document.querySelectorAll('[data-testid=message] .message-content')].some((e) => e.textContent === t),
    text,
    { timeout },
  );
}

export function waitForStatus(page, status, timeout = WAIT) {
  return page.waitForSelector(`[data-testid=conn-status][data-status=${status}]`, { timeout });
}

export function waitForTitle(page, title) {
  return page.waitForFunction((t) => document.querySelector('[data-testid=conv-title]')?.textContent === t, title);
}

/** Signs `name` in on `page` (a fresh page load), and waits until connected. */
export async function signIn(page, base, name, password) {
  await page.goto(base + '/');
  await page.fill('input[name=username]', name);
  await page.fill('input[name=password]', password);
  await page.click('button[type=submit]');
  await waitForStatus(page, 'open');
  await page.waitForFunction((n) => document.querySelector('[data-testid=me]')?.textContent === n, name);
}

/** The rooms the sidebar lists, in its order. */
export function sidebarRooms(page) {
  return page.$$eval('[data-testid=room-item]', (els) => els.map((e) => e.getAttribute('data-room')));
}

/** Waits until the sidebar lists exactly `rooms`, in this order. */
export function waitForSidebar(page, rooms) {
  return page.waitForFunction(
    (want) => JSON.stringify([...document.querySelectorAll('[data-testid=room-item]')].map((e) => e.getAttribute('data-room'))) === want,
    JSON.stringify(rooms),
  );
}

export async function joinRoom(page, room) {
  await page.fill('[data-testid=join-input]', room);
  await page.press('[data-testid=join-input]', 'Enter');
  await waitForTitle(page, `#${room}`);
}

export async function openRoom(page, room) {
  await page.click(`[data-testid=room-item][data-room="${room}"]`);
  await waitForTitle(page, `#${room}`);
}

/** Waits for a toast saying `pattern`; resolves to its text. */
export async function toast(page, pattern) {
  const handle = await page.waitForFunction(
    (src) => [...document.querySelectorAll('[data-testid=toast]')].map((t) => t.textContent).find((t) => new RegExp(src, 'i').test(t)),
    pattern.source,
  );
  return handle.jsonValue();
}
