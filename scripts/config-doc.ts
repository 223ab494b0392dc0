// Writes docs/config.md, the reference of every run.yaml key, from the run config's zod schema
// (src/train/config-doc.ts renders it). `--check` only compares and exits 1 when the file is stale.
// Run: npm run config-doc [-- --check]
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CONFIG_REFERENCE_PATH, configReference } from '../src/train/config-doc.ts';

const file = join(new URL('..', import.meta.url).pathname, CONFIG_REFERENCE_PATH);
const text = configReference();
if (process.argv.includes('--check')) {
  const now = readFileSync(file, 'utf8');
  if (now !== text) {
    console.error(`${CONFIG_REFERENCE_PATH} differs from the run config schema; run \`npm run config-doc\``);
    process.exit(1);
  }
} else {
  writeFileSync(file, text);
  console.log(`wrote ${CONFIG_REFERENCE_PATH}`);
}
