// Shared by the model tests: fixture folders and their expected outputs, causal-LM graphs with the standard
// inputs, feeds from nested arrays, and the largest absolute difference over selected positions.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Graph } from '../../src/graph/index.ts';
import { SafetensorsFile } from '../../src/io/index.ts';
import { type LoadedModel, buildCausalLM, causalGraphInputs, outputCausalLM } from '../../src/models/index.ts';
import { type Session, compile } from '../../src/runtime/index.ts';

export const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'models');

export interface Expected {
  json: Record<string, any>;
  tensors: Record<string, Float32Array>;
}

/** expected.json and every tensor of expected.safetensors of a model fixture. */
export async function readExpected(name: string): Promise<Expected> {
  const dir = join(FIXTURES, name);
  const json = JSON.parse(await readFile(join(dir, 'expected.json'), 'utf8'));
  const f = await SafetensorsFile.open(join(dir, 'expected.safetensors'));
  const tensors: Record<string, Float32Array> = {};
  for (const n of f.names()) tensors[n] = await f.readAs(n, 'f32');
  await f.close();
  return { json, tensors };
}

/** An i64 feed from rows of numbers. */
export function i64(rows: number[][]): { data: BigInt64Array; shape: number[] } {
  return { data: BigInt64Array.from(rows.flat().map(BigInt)), shape: [rows.length, rows[0].length] };
}

/** The causal LM of `model` as a compiled graph with the standard inputs/outputs (causal.ts). */
export async function compileCausal(
  model: LoadedModel,
  opts: { past?: boolean; lastOnly?: boolean } = {},
): Promise<Session> {
  const g = new Graph(`${model.config.model_type}-${opts.past ? 'decode' : 'forward'}`);
  const { inputs } = causalGraphInputs(g, model.cache!, { past: opts.past });
  outputCausalLM(g, buildCausalLM(model.context(g), inputs), { lastOnly: opts.lastOnly });
  return compile(g, { worker: false });
}

/** max |a - b| over rows r and positions t of [B, T, V] tensors where keep(r, t). */
export function maxAbsDiff(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  [B, T, V]: number[],
  keep: (r: number, t: number) => boolean = () => true,
): number {
  let m = 0;
  for (let r = 0; r < B; r++)
    for (let t = 0; t < T; t++) {
      if (!keep(r, t)) continue;
      for (let v = 0; v < V; v++) {
        const i = (r * T + t) * V + v;
        m = Math.max(m, Math.abs(a[i] - b[i]));
      }
    }
  return m;
}

/** Index of the largest of n values at offset. */
export function argmax(a: ArrayLike<number>, offset: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (a[offset + i] > a[offset + best]) best = i;
  return best;
}

type Out = Record<string, { data: ArrayLike<number> | ArrayLike<bigint>; shape: number[] }>;

/** Feeds for the next decode step: every present.{i}.key/value of `out` as past_key_values.{i}.key/value. */
export function pastFrom(out: Out): Record<string, { data: Float32Array; shape: number[] }> {
  const feeds: Record<string, { data: Float32Array; shape: number[] }> = {};
  for (const [k, v] of Object.entries(out)) {
    if (k.startsWith('present.'))
      feeds[`past_key_values.${k.slice('present.'.length)}`] = { data: v.data as Float32Array, shape: v.shape };
  }
  return feeds;
}

/** Empty caches (P = 0) for a batch of `batch` rows. */
export function emptyPast(model: LoadedModel, batch: number): Record<string, { data: Float32Array; shape: number[] }> {
  const { layers, kvHeads, headDim } = model.cache!;
  const feeds: Record<string, { data: Float32Array; shape: number[] }> = {};
  for (let i = 0; i < layers; i++) {
    for (const kv of ['key', 'value'])
      feeds[`past_key_values.${i}.${kv}`] = { data: new Float32Array(0), shape: [batch, kvHeads, 0, headDim] };
  }
  return feeds;
}
