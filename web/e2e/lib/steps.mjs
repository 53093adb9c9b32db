// Test steps of the browser tests that leave a screenshot of every open page behind when they fail.
import path from 'node:path';
import { it } from 'node:test';
import { ARTIFACTS } from './harness.mjs';

/**
 * `snap(name)` screenshots every page of `pages` (name -> page, read at the time) into
 * ARTIFACTS as `<prefix><nn>-<name>-<page name>.png`; `step(name, fn)` is a test that snaps
 * before failing.
 */
export function stepsWithScreenshots(pages, prefix) {
  let shot = 0;
  async function snap(name) {
    shot++;
    const n = String(shot).padStart(2, '0');
    await Promise.all(
      Object.entries(pages).map(([who, page]) =>
        page.screenshot({ path: path.join(ARTIFACTS, `${prefix}${n}-${name}-${who}.png`) }).catch(() => {}),
      ),
    );
  }
  function step(name, fn) {
    it(name, async () => {
      try {
        await fn();
      } catch (e) {
        await snap(`FAILED-${name.replace(/\W+/g, '-').slice(0, 40)}`);
        throw e;
      }
    });
  }
  return { snap, step };
}
