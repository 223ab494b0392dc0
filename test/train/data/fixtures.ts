// Shared by the data-layer tests: fixture tokenizers (loaded once per process), temp folders, the real data path.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HfTokenizer } from '../../../src/io/tokenizer.ts';

/** /work/shared/data: real data sets, read in place (never copied into the repo). */
export const DATA = fileURLToPath(new URL('../../../../shared/data/', import.meta.url));

const loaded = new Map<string, Promise<HfTokenizer>>();

/** A fixture model's tokenizer: llama (Llama-2 chat template, BOS), qwen2 (ChatML, no BOS, pad) or gpt2 (no template).
 * */
export function fixtureTokenizer(name: 'llama' | 'qwen2' | 'gpt2'): Promise<HfTokenizer> {
  if (!loaded.has(name))
    loaded.set(name, HfTokenizer.fromDir(fileURLToPath(new URL(`../../fixtures/models/${name}`, import.meta.url))));
  return loaded.get(name)!;
}

/** A fresh temp folder. */
export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'lorakit-data-'));
}

/** Writes `content` to `dir/name` and returns the path; objects become JSONL (array of objects) or JSON. */
export function writeData(dir: string, name: string, content: string | object[]): string {
  const path = join(dir, name);
  const text =
    typeof content === 'string'
      ? content
      : name.endsWith('.jsonl')
        ? `${content.map((r) => JSON.stringify(r)).join('\n')}\n`
        : JSON.stringify(content);
  writeFileSync(path, text);
  return path;
}

/** The tokens that carry loss, as runs of decoded text (one string per run of consecutive loss positions). */
export function lossRuns(tok: HfTokenizer, ids: readonly number[], labels: readonly number[]): string[] {
  const runs: number[][] = [];
  labels.forEach((l, i) => {
    if (l === -100) return;
    if (i === 0 || labels[i - 1] === -100) runs.push([]);
    runs.at(-1)!.push(ids[i]!);
  });
  return runs.map((r) => tok.decode(r));
}
