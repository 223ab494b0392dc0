/**
 * Choosing the next token on the host: transformers' logits processors (repetition penalty, temperature, top-k,
 * top-p) with its semantics and order, greedy argmax, seeded sampling, and the stop-string matcher.
 * Pure TypeScript over one row of logits at a time (a `Float32Array` of V scores, changed in place); nothing here
 * touches ONNX Runtime. Not here: the model calls and the KV cache (`generate.ts`).
 *
 * Order (transformers 4.57 `_get_logits_processor`): repetition penalty first, on the raw logits; then, only when
 * sampling, temperature → top-k → top-p; then softmax and one multinomial draw. Greedy decoding is the argmax of
 * the penalised logits. Arithmetic on logits is float32 (Math.fround), as torch does it; the softmax and the
 * cumulative sums of top-p and sampling are float64.
 */
import { LorakitError } from '../errors.ts';
import { mulberry32 } from '../linalg/index.ts';

/** How tokens are chosen. All fields optional; `resolveSampling` fills the defaults and validates. */
export interface SamplingOptions {
  /** Sample (true) or take the argmax (false). Default: true when temperature > 0, topK or topP is given. */
  doSample?: boolean;
  /** Divides the logits before sampling (> 0; 0 means greedy). Default 1. */
  temperature?: number;
  /** Keep only the k highest logits (ties with the k-th are kept). 0 or undefined: off. */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (at least one). 1 or undefined: off. */
  topP?: number;
  /** transformers' repetition_penalty: > 1 discourages tokens already in the sequence. Default 1 (off). */
  repetitionPenalty?: number;
}

/** Validated sampling settings. */
export interface ResolvedSampling {
  doSample: boolean;
  temperature: number;
  topK: number;
  topP: number;
  repetitionPenalty: number;
}

/** Checks the options (errors name the option, the expected range and the value) and fills defaults. */
export function resolveSampling(o: SamplingOptions = {}): ResolvedSampling {
  const bad = (name: string, expected: string, got: unknown): never => {
    throw new LorakitError('LK_INVALID_ARGUMENT', `${name} must be ${expected}, got ${String(got)}`, { option: name });
  };
  const { temperature = 1, topK = 0, topP = 1, repetitionPenalty = 1 } = o;
  if (typeof temperature !== 'number' || !(temperature >= 0) || !Number.isFinite(temperature))
    bad('temperature', 'a finite number >= 0', temperature);
  if (!Number.isInteger(topK) || topK < 0) bad('topK', 'a non-negative integer (0 = off)', topK);
  if (typeof topP !== 'number' || !(topP > 0 && topP <= 1)) bad('topP', 'a number in (0, 1]', topP);
  if (typeof repetitionPenalty !== 'number' || !(repetitionPenalty > 0) || !Number.isFinite(repetitionPenalty)) {
    bad('repetitionPenalty', 'a finite number > 0', repetitionPenalty);
  }
  const asked = (o.temperature !== undefined && o.temperature > 0) || o.topK !== undefined || o.topP !== undefined;
  const doSample = temperature === 0 ? false : (o.doSample ?? asked);
  if (o.doSample === true && temperature === 0) bad('temperature', '> 0 when doSample is true', temperature);
  return { doSample, temperature, topK, topP, repetitionPenalty };
}

/**
 * transformers' RepetitionPenaltyLogitsProcessor: for every distinct id in `seen` (prompt included), a negative
 * logit is multiplied by `penalty` and any other divided by it. In place.
 */
export function applyRepetitionPenalty(logits: Float32Array, seen: Iterable<number>, penalty: number): void {
  if (penalty === 1) return;
  const p = Math.fround(penalty);
  const done = new Set<number>();
  for (const id of seen) {
    if (done.has(id) || id < 0 || id >= logits.length) continue;
    done.add(id);
    const s = logits[id];
    logits[id] = s < 0 ? Math.fround(s * p) : Math.fround(s / p);
  }
}

/** transformers' TemperatureLogitsWarper: logits / t, in place. */
export function applyTemperature(logits: Float32Array, temperature: number): void {
  if (temperature === 1) return;
  const t = Math.fround(temperature);
  for (let i = 0; i < logits.length; i++) logits[i] = Math.fround(logits[i] / t);
}

/** transformers' TopKLogitsWarper: logits below the k-th largest become -Infinity (ties with it stay). In place. */
export function applyTopK(logits: Float32Array, k: number): void {
  if (k <= 0 || k >= logits.length) return;
  const kth = Float32Array.from(logits).sort()[logits.length - k]; // ascending; NaN sorts last
  for (let i = 0; i < logits.length; i++) if (logits[i] < kth) logits[i] = -Infinity;
}

/**
 * transformers' TopPLogitsWarper: sort ascending, and remove the tokens whose cumulative probability is
 * <= 1 - p, always keeping the most likely one. Equal logits are ordered by id (torch's sort order is unspecified
 * there). In place.
 */
export function applyTopP(logits: Float32Array, p: number): void {
  if (p >= 1) return;
  const probs = softmax(logits);
  const order = Array.from(logits.keys()).sort((a, b) => logits[a] - logits[b] || a - b);
  let cum = 0;
  for (let j = 0; j < order.length - 1; j++) {
    // the last (most likely) token is always kept
    cum += probs[order[j]];
    if (cum <= 1 - p) logits[order[j]] = -Infinity;
    else break;
  }
}

/** Index of the largest logit; the first one on ties (torch.argmax). */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/** softmax in float64; -Infinity logits get probability 0. */
export function softmax(logits: ArrayLike<number>): Float64Array {
  let m = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > m) m = logits[i];
  const out = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += out[i] = Math.exp(logits[i] - m);
  for (let i = 0; i < out.length; i++) out[i] /= sum;
  return out;
}

/** One draw from softmax(logits): the first id whose cumulative probability exceeds u = rng() (inverse CDF). */
export function sample(logits: ArrayLike<number>, rng: () => number): number {
  const probs = softmax(logits);
  const u = rng();
  let cum = 0,
    last = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] === 0) continue;
    last = i;
    cum += probs[i];
    if (u < cum) return i;
  }
  return last; // u within rounding of 1
}

/**
 * Chooses the next token of one row: repetition penalty over `seen`, then argmax, or temperature → top-k →
 * top-p → sample. Changes `logits` in place.
 */
export function chooseToken(
  logits: Float32Array,
  seen: Iterable<number>,
  s: ResolvedSampling,
  rng: () => number,
): number {
  applyRepetitionPenalty(logits, seen, s.repetitionPenalty);
  if (!s.doSample) return argmax(logits);
  applyTemperature(logits, s.temperature);
  applyTopK(logits, s.topK);
  applyTopP(logits, s.topP);
  return sample(logits, rng);
}

/**
 * A seeded PRNG (mulberry32 over a splitmix-style mix of seed and stream) returning floats in [0, 1).
 * The same (seed, stream) always gives the same sequence; generate gives batch row b stream b.
 */
export function createRng(seed: number, stream = 0): () => number {
  if (!Number.isSafeInteger(seed))
    throw new LorakitError('LK_INVALID_ARGUMENT', `seed must be a safe integer, got ${seed}`, { option: 'seed' });
  return mulberry32(
    mix32(mix32((seed % 0x100000000) >>> 0) ^ Math.floor(seed / 0x100000000) ^ mix32(stream + 0x9e3779b9)),
  );
}

function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** Checks eos ids (one or many) and returns them as a set. */
export function eosSet(eos: number | readonly number[] | null | undefined): Set<number> {
  const ids = eos == null ? [] : typeof eos === 'number' ? [eos] : eos;
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0)
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `eosTokenId must be a non-negative integer or a list of them, got ${JSON.stringify(eos)}`,
        { option: 'eosTokenId' },
      );
  }
  return new Set(ids);
}

/**
 * Finds stop strings in streamed text, OpenAI-style: the text before the first stop string is output and the stop
 * string itself is not. Text that could still become a stop string is held back until it cannot, so the pieces
 * `push` returns never include any part of a stop string and join to the final text.
 */
export class StopStrings {
  private pending = '';
  private stopped = false;
  private readonly stops: readonly string[];

  constructor(stops: string | readonly string[] | undefined) {
    const list = stops === undefined ? [] : typeof stops === 'string' ? [stops] : stops;
    list.forEach((s, i) => {
      if (typeof s !== 'string' || s.length === 0) {
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          `stop[${i}] must be a non-empty string, got ${JSON.stringify(s)}`,
          { option: 'stop' },
        );
      }
    });
    this.stops = [...list];
  }

  /** Adds text; returns what may be output now and whether a stop string was completed (then nothing more is). */
  push(piece: string): { text: string; stopped: boolean } {
    if (this.stopped) return { text: '', stopped: true };
    this.pending += piece;
    let at = -1;
    for (const s of this.stops) {
      const i = this.pending.indexOf(s);
      if (i >= 0 && (at < 0 || i < at)) at = i;
    }
    if (at >= 0) {
      this.stopped = true;
      const text = this.pending.slice(0, at);
      this.pending = '';
      return { text, stopped: true };
    }
    const hold = this.heldLength();
    const text = this.pending.slice(0, this.pending.length - hold);
    this.pending = this.pending.slice(this.pending.length - hold);
    return { text, stopped: false };
  }

  /** The held-back text, at the end of a generation that no stop string ended. */
  flush(): string {
    const rest = this.stopped ? '' : this.pending;
    this.pending = '';
    return rest;
  }

  /** Length of the longest suffix of `pending` that is a proper prefix of some stop string. */
  private heldLength(): number {
    let best = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, this.pending.length); n > best; n--) {
        if (this.pending.endsWith(s.slice(0, n))) {
          best = n;
          break;
        }
      }
    }
    return best;
  }
}
