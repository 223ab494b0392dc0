/**
 * Vite config of the browser demo (`npm run web` serves it, `npm run web:build` writes web/dist): the page and its
 * Web Worker import lorakit's own src/ tree, with the two seams swapped for their browser sides (io/host.ts →
 * host.browser.ts, runtime/ort.ts → ort.browser.ts) and the few Node-only imports left in library files that the
 * page never calls (the ORT worker thread, progress bars, the loss plot) resolved to a stub that throws. It serves
 * (and on build copies) the demo base (`/demo-base/`), ORT's wasm files (`/ort/`) and the Brown fiction split
 * (`/brown-fiction.json`), and sends COOP/COEP so the page is cross-origin isolated: without that, no
 * SharedArrayBuffer, and ORT silently runs one wasm thread.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Plugin, defineConfig } from 'vite';
import { readBrown, splitBrown } from '../src/demo/brown.ts';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const SWAPS: Record<string, string> = {
  [resolve(root, 'src/io/host.ts')]: resolve(root, 'src/io/host.browser.ts'),
  [resolve(root, 'src/runtime/ort.ts')]: resolve(root, 'src/runtime/ort.browser.ts'),
};
const NODE_ONLY = new Set(['node:worker_threads', 'node:stream', 'cli-progress', 'vega']);
const STUB = resolve(here, 'node-only.ts');
const ISOLATION = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };
const ORT_DIST = resolve(root, 'node_modules/onnxruntime-web/dist');
const ORT_FILES = (readdirSync(ORT_DIST) as string[]).filter((f) => /^ort-wasm-simd-threaded(\.jsep)?\.(wasm|mjs)$/.test(f));
const BASE_DIR = resolve(root, 'models/demo-base');

/** The Brown fiction split the page trains on by default (train text) and evaluates on (held-out text). */
function brownFictionJson(): string {
  const split = splitBrown(readBrown({ side: 'fiction' }), 'fiction');
  const join2 = (fs: { text: string }[]) => fs.map((f) => f.text).join('\n\n');
  return JSON.stringify({ train: join2(split.train), heldOut: join2(split.heldOut) });
}

/** Static files the page fetches, by URL path: the demo base, ORT's wasm, the corpus. */
function assets(): Map<string, () => Buffer | string> {
  const m = new Map<string, () => Buffer | string>();
  for (const f of readdirSync(BASE_DIR)) m.set(`demo-base/${f}`, () => readFileSync(join(BASE_DIR, f)));
  for (const f of ORT_FILES) m.set(`ort/${f}`, () => readFileSync(join(ORT_DIST, f)));
  let brown: string | null = null;
  m.set('brown-fiction.json', () => (brown ??= brownFictionJson()));
  return m;
}

const TYPES: Record<string, string> = {
  '.wasm': 'application/wasm',
  '.mjs': 'text/javascript',
  '.json': 'application/json',
  '.md': 'text/markdown',
};

function lorakitBrowser(): Plugin {
  const files = assets();
  return {
    name: 'lorakit-browser',
    enforce: 'pre',
    async resolveId(source, importer, options) {
      if (NODE_ONLY.has(source)) return STUB;
      if (!importer || !source.startsWith('.')) return null;
      const r = await this.resolve(source, importer, { ...options, skipSelf: true });
      const swap = r && SWAPS[r.id.split('?')[0]];
      return swap ?? null;
    },
    configureServer(server) {
      server.middlewares.use((req, res, next) => {
        const path = decodeURIComponent((req.url ?? '').split('?')[0]).replace(/^\//, '');
        const get = files.get(path);
        if (!get) return next();
        const ext = path.slice(path.lastIndexOf('.'));
        res.setHeader('Content-Type', TYPES[ext] ?? 'application/octet-stream');
        for (const [k, v] of Object.entries(ISOLATION)) res.setHeader(k, v);
        res.end(get());
      });
    },
    generateBundle() {
      for (const [fileName, get] of files) this.emitFile({ type: 'asset', fileName, source: get() });
    },
  };
}

export default defineConfig({
  root: here,
  plugins: [lorakitBrowser()],
  server: { headers: ISOLATION, fs: { allow: [root] } },
  preview: { headers: ISOLATION },
  worker: { format: 'es', plugins: () => [lorakitBrowser()] },
  // every dependency the worker imports, pre-bundled up front (one found late makes the dev server reload the page)
  optimizeDeps: {
    exclude: ['onnxruntime-web'],
    include: ['zod', 'yaml', 'fflate', '@huggingface/jinja', '@huggingface/tokenizers'],
  },
  build: { outDir: resolve(here, 'dist'), emptyOutDir: true, target: 'es2022' },
});
