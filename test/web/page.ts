// Shared by the browser tests: the demo page served by Vite's dev server (web/vite.config.ts, COOP/COEP headers)
// and Debian's Chromium launched through playwright-core, both closed by the returned function. Chromium is the
// system binary (LORAKIT_CHROMIUM overrides /usr/bin/chromium); playwright never downloads a browser here.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';

/** The Chromium binary the browser tests drive. */
export const CHROMIUM = process.env.LORAKIT_CHROMIUM ?? '/usr/bin/chromium';
/** Whether it is installed (the tests skip, with a note, when not). */
export const HAVE_CHROMIUM = existsSync(CHROMIUM);

/** A page expression (the tests' types have no DOM) that is true once the status line matches `re`. */
export const statusMatches = (re: string) => `/${re}/.test(document.getElementById('status').textContent)`;

/** Starts the demo's dev server and a headless Chromium with `args`; `close` stops both. */
export async function startDemo(
  args: string[] = [],
): Promise<{ url: string; browser: Browser; close(): Promise<void> }> {
  const { createServer } = await import('vite');
  const { chromium } = await import('playwright-core');
  const server = await createServer({
    configFile: join(import.meta.dirname, '../../web/vite.config.ts'),
    // no file watching or HMR: an edit (or a late dependency pre-bundle) must not reload a page mid-test
    server: { port: 0, host: '127.0.0.1', hmr: false, watch: null },
    logLevel: 'error',
  });
  await server.listen();
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', ...args] });
  return {
    url: server.resolvedUrls!.local[0],
    browser,
    async close() {
      await browser.close();
      await server.close();
    },
  };
}

/** URL query of the page's settings (numbers and strings as given). */
export function query(settings: Record<string, string | number>): string {
  return new URLSearchParams(Object.entries(settings).map(([k, v]): [string, string] => [k, String(v)])).toString();
}
