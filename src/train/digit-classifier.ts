/**
 * The composition metric's judge: a small host MLP (64 → hidden ReLU → 11) that names what one 8×8 cell of a digit
 * canvas holds — a digit 0–9 or "empty" (class 10) — trained with softmax cross-entropy and Adam in float64 on the
 * training split of the bundled digits (digit-canvas.ts) plus blank and faint-noise cells, all in the canvases' [−1, 1]
 * scale. `scoreCanvases` classifies both halves of generated canvases and counts how often a pair of concepts is
 * present, one per half (the "both concepts present" rate of docs/vision.md).
 * Host TypeScript, no ONNX Runtime: the judge must not share code paths with the U-Net it judges.
 * Not here: the canvases (digit-canvas.ts), the sampling (serve/diffusion-compose.ts).
 */
import { LorakitError } from '../errors.ts';
import { Rng, seedFrom } from '../linalg/index.ts';
import { CANVAS, type DigitImages, digitSplit } from './digit-canvas.ts';

/** Classes: digits 0–9 and 10 "empty". */
export const CELL_CLASSES = 11;
const D = 64;

/** The MLP's weights: W1 [hidden, 64], b1, W2 [11, hidden], b2. */
export interface CellClassifier {
  hidden: number;
  w1: Float64Array;
  b1: Float64Array;
  w2: Float64Array;
  b2: Float64Array;
}

/** Logits [11] of one cell x [64]; `h` receives the hidden activations. */
function forward(m: CellClassifier, x: ArrayLike<number>, h: Float64Array): Float64Array {
  const z = new Float64Array(CELL_CLASSES);
  for (let j = 0; j < m.hidden; j++) {
    let s = m.b1[j];
    for (let i = 0; i < D; i++) s += m.w1[j * D + i] * x[i];
    h[j] = Math.max(s, 0);
  }
  for (let c = 0; c < CELL_CLASSES; c++) {
    let s = m.b2[c];
    for (let j = 0; j < m.hidden; j++) s += m.w2[c * m.hidden + j] * h[j];
    z[c] = s;
  }
  return z;
}

/** The most likely class of one cell [64] in [−1, 1]. */
export function classifyCell(m: CellClassifier, x: ArrayLike<number>): number {
  const z = forward(m, x, new Float64Array(m.hidden));
  let best = 0;
  for (let c = 1; c < CELL_CLASSES; c++) if (z[c] > z[best]) best = c;
  return best;
}

/** Labelled cells of one split: every digit image (grey/8 − 1) and as many blank cells with faint noise. */
export function cellSet(digits: DigitImages, split: 'train' | 'test', seed: number) {
  const rows = digitSplit(digits.labels, split).flat();
  const blanks = Math.floor(rows.length / 10);
  const x = new Float64Array((rows.length + blanks) * D);
  const y = new Int32Array(rows.length + blanks);
  rows.forEach((r, k) => {
    for (let i = 0; i < D; i++) x[k * D + i] = digits.images[r * D + i] / 8 - 1;
    y[k] = digits.labels[r];
  });
  const rng = new Rng(seedFrom(seed, `blanks ${split}`));
  for (let k = rows.length; k < rows.length + blanks; k++) {
    const level = 0.3 * rng.next(); // blank up to a faint haze, as half-denoised empty halves look
    for (let i = 0; i < D; i++) x[k * D + i] = -1 + level * Math.abs(rng.normal());
    y[k] = 10;
  }
  return { x, y, n: y.length };
}

/** Trains the MLP: Adam (lr 1e-2, β 0.9/0.999), minibatches of 32, `epochs` passes, softmax cross-entropy. */
export function trainCellClassifier(
  set: { x: Float64Array; y: Int32Array; n: number },
  o: { hidden?: number; epochs?: number; seed?: number } = {},
): CellClassifier {
  const H = o.hidden ?? 48;
  const rng = new Rng(seedFrom(o.seed ?? 0, 'cell classifier'));
  const init = (n: number, fanIn: number) =>
    Float64Array.from({ length: n }, () => rng.normal() * Math.sqrt(2 / fanIn));
  const m: CellClassifier = {
    hidden: H,
    w1: init(H * D, D),
    b1: new Float64Array(H),
    w2: init(CELL_CLASSES * H, H),
    b2: new Float64Array(CELL_CLASSES),
  };
  const params = [m.w1, m.b1, m.w2, m.b2];
  const grads = params.map((p) => new Float64Array(p.length));
  const [m1, m2] = [params.map((p) => new Float64Array(p.length)), params.map((p) => new Float64Array(p.length))];
  const h = new Float64Array(H);
  let t = 0;
  for (let epoch = 0; epoch < (o.epochs ?? 30); epoch++) {
    const order = Array.from({ length: set.n }, (_, i) => i);
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rng.next() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    for (let start = 0; start < set.n; start += 32) {
      for (const g of grads) g.fill(0);
      const batch = order.slice(start, start + 32);
      for (const k of batch) {
        const x = set.x.subarray(k * D, (k + 1) * D);
        const z = forward(m, x, h);
        const zmax = Math.max(...z);
        const e = z.map((v) => Math.exp(v - zmax));
        const sum = e.reduce((a, b) => a + b, 0);
        // d(CE)/dz = softmax(z) − onehot(y)
        const dz = e.map((v, c) => v / sum - (c === set.y[k] ? 1 : 0));
        const dh = new Float64Array(H);
        for (let c = 0; c < CELL_CLASSES; c++) {
          grads[3][c] += dz[c];
          for (let j = 0; j < H; j++) {
            grads[2][c * H + j] += dz[c] * h[j];
            dh[j] += dz[c] * m.w2[c * H + j];
          }
        }
        for (let j = 0; j < H; j++) {
          if (h[j] <= 0) continue; // ReLU gate
          grads[1][j] += dh[j];
          for (let i = 0; i < D; i++) grads[0][j * D + i] += dh[j] * x[i];
        }
      }
      t++;
      params.forEach((p, q) => {
        for (let i = 0; i < p.length; i++) {
          const g = grads[q][i] / batch.length;
          m1[q][i] = 0.9 * m1[q][i] + 0.1 * g;
          m2[q][i] = 0.999 * m2[q][i] + 0.001 * g * g;
          p[i] -= (1e-2 * (m1[q][i] / (1 - 0.9 ** t))) / (Math.sqrt(m2[q][i] / (1 - 0.999 ** t)) + 1e-8);
        }
      });
    }
  }
  return m;
}

/** Accuracy of the classifier on a labelled cell set. */
export function cellAccuracy(m: CellClassifier, set: { x: Float64Array; y: Int32Array; n: number }): number {
  let ok = 0;
  for (let k = 0; k < set.n; k++) if (classifyCell(m, set.x.subarray(k * D, (k + 1) * D)) === set.y[k]) ok++;
  return ok / set.n;
}

/** The two halves' classes of canvases [n, 1, 8, 16] (values clamped to [−1, 1]). */
export function canvasClasses(m: CellClassifier, canvases: Float32Array): [number, number][] {
  const { height: Hc, width: W, cell: C } = CANVAS;
  const n = canvases.length / (Hc * W);
  if (!Number.isInteger(n))
    throw new LorakitError('LK_SHAPE_MISMATCH', `canvasClasses: ${canvases.length} values are not whole 8×16 canvases`);
  const out: [number, number][] = [];
  const cell = new Float64Array(D);
  for (let k = 0; k < n; k++) {
    const halves = [0, 1].map((half) => {
      for (let y = 0; y < C; y++)
        for (let x = 0; x < C; x++)
          cell[y * C + x] = Math.max(-1, Math.min(1, canvases[k * Hc * W + y * W + half * C + x]));
      return classifyCell(m, cell);
    });
    out.push([halves[0], halves[1]]);
  }
  return out;
}

/**
 * How often concepts a and b appear: each anywhere, both (one per half, either order), and in place (a in the left
 * half and b in the right: what a positional prompt [a, b] asks for).
 */
export function scoreCanvases(m: CellClassifier, canvases: Float32Array, a: number, b: number) {
  const cls = canvasClasses(m, canvases);
  const has = (d: number) => cls.filter(([l, r]) => l === d || r === d).length / cls.length;
  const both = cls.filter(([l, r]) => (l === a && r === b) || (l === b && r === a)).length / cls.length;
  const inPlace = cls.filter(([l, r]) => l === a && r === b).length / cls.length;
  return { a: has(a), b: has(b), both, inPlace, classes: cls };
}
