/** Chromium (Debian's, driven by playwright-core) for the web UI's tests, and the steps they share. */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExecutionContext } from 'ava';
import { chromium, type Browser, type Page } from 'playwright-core';
import { UI_ROOT } from '../../webapi/server.js';

const CHROMIUM = process.env.ACP_CHROMIUM ?? '/usr/bin/chromium';
/** What keeps the browser tests from running here: no Chromium, or no built UI. */
export function browserMissing(): string | undefined {
  if (!existsSync(CHROMIUM)) return `${CHROMIUM} is not installed (apt-get install chromium)`;
  if (!existsSync(join(UI_ROOT, 'index.html'))) return `the web UI is not built (${UI_ROOT}: npm run build)`;
  return undefined;
}
export const artifacts = fileURLToPath(new URL('../../../test-results', import.meta.url));

export async function browser(t: ExecutionContext): Promise<Browser> {
  // As root in a container: no sandbox; and no background traffic to a network that is not there.
  const launched = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.teardown(() => launched.close());
  return launched;
}

/** Logs a fresh page in with an API token through the login form; resolves once the UI is up. */
export async function tokenPage(chrome: Browser, origin: string, token: string, viewport = { width: 1280, height: 800 }): Promise<Page> {
  const page = await (await chrome.newContext({ viewport })).newPage();
  await page.goto(`${origin}/`);
  await page.fill('#token', token);
  await page.click('#login button[type=submit]');
  await page.waitForSelector('body[data-ready=true]');
  return page;
}

/** Types a line into the page's serial console; resolves once the guest's echo shows in it. */
export async function typeInto(page: Page, line: string): Promise<void> {
  await page.click('.console .xterm');
  await page.keyboard.type(line);
  await page.keyboard.press('Enter');
  await page.waitForFunction(
    (wanted) => ((globalThis as unknown as { document: { querySelector(s: string): { textContent: string | null } | null } }).document.querySelector('.console .xterm-rows')?.textContent ?? '').includes(wanted),
    line,
    { timeout: 30_000 },
  );
}


/** Waits for the page's noVNC display to connect and its canvas to show a guest's screen: lit pixels. */
export async function displayLit(page: Page): Promise<{ width: number; height: number; lit: number }> {
  await page.waitForSelector('.display[data-connected="true"]', { timeout: 60_000 });
  const lit = await page.waitForFunction(
    () => {
      type Canvas = { width: number; height: number; getContext(kind: '2d'): { getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray } } | null };
      const canvas = (globalThis as unknown as { document: { querySelector(s: string): Canvas | null } }).document.querySelector('.display canvas');
      if (!canvas || canvas.width < 320) return false;
      const { data } = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height);
      let count = 0;
      for (let at = 0; at < data.length; at += 4) if (data[at]! + data[at + 1]! + data[at + 2]! > 96) count += 1;
      return count > 100 ? { width: canvas.width, height: canvas.height, lit: count } : false;
    },
    undefined,
    { timeout: 60_000 },
  );
  return (await lit.jsonValue()) as { width: number; height: number; lit: number };
}
