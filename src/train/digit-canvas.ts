/**
 * The diffusion experiments' images: canvases of two 8×8 handwritten digits side by side (8×16, one channel, grey
 * scaled to [−1, 1]) made from scikit-learn's digits (data/digits, interop/make_digits_data.py), each with a two-token
 * prompt naming what is drawn. Prompts are token ids: 0–9 the digits, 10 "empty" (a blank half), 11 the null prompt
 * of classifier-free guidance. A prompt is a set: the U-Net's cross-attention has no positions, so which half holds
 * which digit is the model's choice. A positional prompt ([left, right]) gives each token its half as well, so two
 * concept LoRAs no longer fight for the same half (docs/vision.md); the kind is saved beside the U-Net
 * (`savePromptKind`, `promptKindOf`) so sampling never has to be told it again.
 * The states a U-Net attends to are one-hot rows of the token ids ([N, 2, 12]; positional: token ⊕ position, 14): a
 * learned embedding table E would only multiply to_k and to_v by E, so one-hot rows lose nothing and need no extra
 * file (docs/decisions.md).
 * Not here: the training task (diffusion.ts), the classifier that scores canvases (serve/digit-classifier.ts).
 */
import { LorakitError } from '../errors.ts';
import { readFileSync, existsSync, join } from '../io/host.ts';
import { writeFileAtomic } from '../io/index.ts';
import { Rng, seedFrom } from '../linalg/index.ts';

/** Token ids of the canvas prompts. */
export const CANVAS_TOKENS = { empty: 10, null: 11, vocab: 12 } as const;
/** Canvas size: two 8×8 cells side by side. */
export const CANVAS = { height: 8, width: 16, cell: 8, promptLength: 2 } as const;

/** Images [n, 1, 8, 16] in [−1, 1] and their prompts [n, 2] (token ids: [main, other]). */
export interface CanvasSet {
  images: Float32Array;
  tokens: Int32Array;
  /** The half (0 left, 1 right) of each canvas's main digit (token 0); the other token is in the other half. */
  halves: Uint8Array;
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
  const set = {
    images: new Float32Array(o.count * H * W).fill(-1),
    tokens: new Int32Array(o.count * 2),
    halves: new Uint8Array(o.count),
    n: o.count,
  };
  const r = new Rng(seedFrom(o.seed, 'canvases'));
  const pick = <T>(a: readonly T[]) => a[Math.floor(r.next() * a.length)];
  for (let k = 0; k < o.count; k++) {
    const d = pick(o.main);
    const half = r.next() < 0.5 ? 0 : 1;
    set.halves[k] = half;
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

/**
 * How a prompt reaches the U-Net: 'set' (one-hot tokens; cross-attention cannot tell which half a token names) or
 * 'positional' (tokens ordered [left, right], each row one-hot token ⊕ one-hot position).
 */
export type PromptKind = 'set' | 'positional';
export const PROMPT_KINDS: readonly PromptKind[] = ['set', 'positional'];

/** The width of a prompt row, = the U-Net's cross_attention_dim: 12 (set) or 12 + 2 (positional). */
export function promptWidth(kind: PromptKind): number {
  return CANVAS_TOKENS.vocab + (kind === 'positional' ? CANVAS.promptLength : 0);
}

/**
 * The states [n, 2, promptWidth(kind)] of canvas prompts [n, 2]. Positional: token l of a row names half l and its
 * row also has a 1 at column vocab + l (so the null prompt, too, carries its positions, as in training).
 */
export function promptStates(tokens: ArrayLike<number>, kind: PromptKind): Float32Array {
  const V = CANVAS_TOKENS.vocab;
  const L = CANVAS.promptLength;
  if (tokens.length % L !== 0)
    throw new LorakitError('LK_SHAPE_MISMATCH', `promptStates: ${tokens.length} token ids are not rows of ${L}`);
  const hot = oneHotStates(tokens, V);
  if (kind === 'set') return hot;
  const D = promptWidth(kind);
  const out = new Float32Array(tokens.length * D);
  for (let i = 0; i < tokens.length; i++) {
    out.set(hot.subarray(i * V, (i + 1) * V), i * D);
    out[i * D + V + (i % L)] = 1;
  }
  return out;
}

/** The set's prompts in half order [left, right] (what a positional prompt says), from tokens [main, other]. */
export function leftRightTokens(set: CanvasSet): Int32Array {
  const out = new Int32Array(set.n * 2);
  for (let k = 0; k < set.n; k++) {
    const h = set.halves[k];
    out[2 * k + h] = set.tokens[2 * k];
    out[2 * k + 1 - h] = set.tokens[2 * k + 1];
  }
  return out;
}

/** The file beside a U-Net's config.json that says how its prompts were built. */
export const PROMPT_FILE = 'lorakit_prompt.json';

/** Records the prompt kind a U-Net folder was trained with (atomic write). */
export async function savePromptKind(dir: string, kind: PromptKind): Promise<void> {
  const json = { kind, vocab: CANVAS_TOKENS.vocab, length: CANVAS.promptLength, width: promptWidth(kind) };
  await writeFileAtomic(join(dir, PROMPT_FILE), `${JSON.stringify(json, null, 2)}\n`);
}

/**
 * The prompt kind of a U-Net folder: its lorakit_prompt.json, or 'set' when the folder has none (folders written
 * before positional prompts existed, or any one-hot prompt model). A recorded kind is checked against the U-Net's
 * cross_attention_dim when `width` is given.
 */
export function promptKindOf(dir: string, width?: number): PromptKind {
  const file = join(dir, PROMPT_FILE);
  let kind: PromptKind = 'set';
  if (existsSync(file)) {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      throw new LorakitError('LK_CONFIG_INVALID', `${file}: not valid JSON (${(e as Error).message})`, { file });
    }
    const k = (raw as { kind?: unknown } | null)?.kind;
    if (typeof k !== 'string' || !(PROMPT_KINDS as readonly string[]).includes(k))
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${file}: field "kind" must be one of ${PROMPT_KINDS.join(', ')}, got ${JSON.stringify(k)}`,
        { file, field: 'kind' },
      );
    kind = k as PromptKind;
    if (width !== undefined && width !== promptWidth(kind))
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${file}: prompt kind "${kind}" needs cross_attention_dim ${promptWidth(kind)}, the U-Net has ${width}`,
        { file, field: 'kind' },
      );
  }
  return kind;
}
