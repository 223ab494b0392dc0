// Prints lines of code per src/ folder (and the largest files), so growth is visible in every CI log.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('../src/', import.meta.url).pathname;
const perFolder = new Map();
const files = [];
(function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (/\.(ts|mjs|js)$/.test(name)) {
      const n = readFileSync(p, 'utf8')
        .split('\n')
        .filter((l) => l.trim() !== '').length;
      const folder = relative(root, dir).split('/')[0] || '.';
      perFolder.set(folder, (perFolder.get(folder) ?? 0) + n);
      files.push([relative(root, p), n]);
    }
  }
})(root);
let total = 0;
for (const [f, n] of [...perFolder].sort()) {
  console.log(`${String(n).padStart(6)}  src/${f}`);
  total += n;
}
console.log(`${String(total).padStart(6)}  total (non-blank lines)`);
const big = files.filter(([, n]) => n > 400).sort((a, b) => b[1] - a[1]);
if (big.length) console.log(`files over 400 lines: ${big.map(([f, n]) => `${f} (${n})`).join(', ')}`);
