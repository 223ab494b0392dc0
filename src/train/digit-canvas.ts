/**
 * The diffusion experiments' images: canvases of two 8×8 handwritten digits side by side (8×16, one channel, grey
 * scaled to [−1, 1]) made from scikit-learn's digits (data/digits, interop/make_digits_data.py), each with a two-token
 * prompt naming what is drawn. Prompts are token ids: 0–9 the digits, 10 "empty" (a blank half), 11 the null prompt
 * of classifier-free guidance. A prompt is a set: the U-Net's cross-attention has no positions, so which half holds
 * which digit is the model's choice; `canvasPrompt` orders nothing.
 * The states a U-Net attends to are one-hot rows of the token ids ([N, 2, 12]): a learned embedding table E would
 * only multiply to_k and to_v by E, so one-hot rows lose nothing and need no extra file (docs/decisions.md).
 * Not here: the training task (diffusion.ts), the classifier that scores canvases (serve/digit-classifier.ts).
 */
import { LorakitError } from '../errors.ts';
import { Rng, seedFrom } from '../linalg/index.ts';

/** Token ids of the canvas prompts. */
export const CANVAS_TOKENS = { empty: 10, null: 11, vocab: 12 } as const;
/** Canvas size: two 8×8 cells side by side. */
export const CANVAS = { height: 8, width: 16, cell: 8, promptLength: 2 } as const;

/** Images [n, 1, 8, 16] in [−1, 1] and their prompts [n, 2] (token ids). */
export interface CanvasSet {
  images: Float32Array;
  tokens: Int32Array;
  n: number;
}

/** The bundled digits: 8×8 greys 0..16 [count, 64] and labels. */
export interface DigitImages {
  images: Uint8Array;
  labels: Uint8Array;
}

/** Options of digitCanvases. */
export interface CanvasOptions {
  /** Digits of the first slot (the concept the set teaches), e.g. [0, 1, 2, 3, 4] for a base, [7] for a concept. */
  main: readonly number[];
  /** Digits the other half may hold. */
  other: readonly number[];
  /** Probability that the other half is blank (token "empty"). */
  emptyProbability: number;
  count: number;
  seed: number;
  /** Which digit images to draw from ('train': 4 of every 5 per class after a seeded shuffle; 'test': the rest). */
  split: 'train' | 'test';
}

/** The image indices of each class in one split: a seeded per-class shuffle, the first 80% train, the rest test. */
export function digitSplit(labels: Uint8Array, split: 'train' | 'test'): number[][] {
  return Array.from({ length: 10 }, (_, d) => {
    const rows = [...labels.keys()].filter((i) => labels[i] === d);
    const r = new Rng(seedFrom(17, `split ${d}`));
    for (let i = rows.length - 1; i > 0; i--) {
      const j = Math.floor(r.next() * (i + 1));
      [rows[i], rows[j]] = [rows[j], rows[i]];
    }
    const cut = Math.floor(rows.length * 0.8);
    return split === 'train' ? rows.slice(0, cut) : rows.slice(cut);
  });
}

/** Writes digit image `row` (grey/8 − 1) into cell `half` (0 left, 1 right) of canvas `k`; blank cells stay −1. */
export function drawCell(out: Float32Array, k: number, half: number, digits: DigitImages, row: number): void {
  const { height: H, width: W, cell: C } = CANVAS;
  for (let y = 0; y < C; y++)
    for (let x = 0; x < C; x++) out[k * H * W + y * W + half * C + x] = digits.images[row * 64 + y * 8 + x] / 8 - 1;
}

/** Seeded canvases: a `main` digit in a random half, the other half blank or an `other` digit. */
export function digitCanvases(digits: DigitImages, o: CanvasOptions): CanvasSet {
  if (o.main.length === 0 || o.main.some((d) => !Number.isInteger(d) || d < 0 || d > 9))
    throw new LorakitError('LK_CONFIG_INVALID', `digit canvases: main must list digits 0–9, got [${o.main}]`);
  if (o.other.some((d) => !Number.isInteger(d) || d < 0 || d > 9))
    throw new LorakitError('LK_CONFIG_INVALID', `digit canvases: other must list digits 0–9, got [${o.other}]`);
  const pools = digitSplit(digits.labels, o.split);
  const { height: H, width: W } = CANVAS;
  const set = { images: new Float32Array(o.count * H * W).fill(-1), tokens: new Int32Array(o.count * 2), n: o.count };
  const r = new Rng(seedFrom(o.seed, 'canvases'));
  const pick = <T>(a: readonly T[]) => a[Math.floor(r.next() * a.length)];
  for (let k = 0; k < o.count; k++) {
    const d = pick(o.main);
    const half = r.next() < 0.5 ? 0 : 1;
    drawCell(set.images, k, half, digits, pick(pools[d]));
    set.tokens[2 * k] = d;
    if (o.other.length === 0 || r.next() < o.emptyProbability) set.tokens[2 * k + 1] = CANVAS_TOKENS.empty;
    else {
      const e = pick(o.other);
      drawCell(set.images, k, 1 - half, digits, pick(pools[e]));
      set.tokens[2 * k + 1] = e;
    }
  }
  return set;
}

/** One-hot states [n, L, vocab] of token ids [n, L]: what the U-Net's cross-attention reads. */
export function oneHotStates(tokens: ArrayLike<number>, vocab: number): Float32Array {
  const out = new Float32Array(tokens.length * vocab);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (!Number.isInteger(t) || t < 0 || t >= vocab)
      throw new LorakitError('LK_INVALID_ARGUMENT', `oneHotStates: token ${t} at ${i} is outside 0..${vocab - 1}`);
    out[i * vocab + t] = 1;
  }
  return out;
}

/** The prompt of n canvases asking for digits a and b (token ids [n, 2]; b may be CANVAS_TOKENS.empty). */
export function canvasPrompt(n: number, a: number, b: number): Int32Array {
  return Int32Array.from({ length: 2 * n }, (_, i) => (i % 2 === 0 ? a : b));
}
