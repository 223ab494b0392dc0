/**
 * CMLoRA's frequency-domain ordering of LoRAs (Zou et al., ICLR 2025, arXiv:2502.04923; spec methods-c §4 step 1;
 * read in Yqcca/CMLoRA@6b51224: `cal_mean_relative_log_amplitudes` of pipeline_online.py, fft_analysis.ipynb,
 * `check_anime_lora` and the `i <= 120` branch of pipeline_offline.py):
 *  - the score of one image: 2-D DFT of its channel mean → fftshift → |·| → mean over integer radius bins around the
 *    centre (rows//2, cols//2) → divided by its maximum → mean of the bins from radius `highFrom` on (the
 *    high-frequency tail);
 *  - a LoRA's score is the mean score of images drawn with it alone; LoRAs scoring at or above a threshold form the
 *    high-frequency list (the code's `real_list`: character, clothing, style, object), the rest the low-frequency list
 *    (`abs_list`: background); the passes run high list first, then low (`adapters = real_list + abs_list`);
 *  - high-frequency LoRAs dominate the early steps, and after the switch step the dominance cycle moves up by one so
 *    a low-frequency LoRA takes its turn (cmlora-schedule.ts applies this order).
 * The code's offline pipeline hard-codes the split by category and its online one scores the running latent against
 * a threshold g; what is built here is the profiling the paper describes (a score per LoRA from its own samples) with
 * the threshold as a parameter (default: the mean score, so a set of one kind still splits by relative amplitude).
 * Not here: the schedule (cmlora-schedule.ts), the composition passes (diffusion-compose.ts).
 */
import { LorakitError } from '../errors.ts';

/**
 * The radial amplitude profile of one image x [h, w]: bin r holds the mean |F(u, v)| over the shifted frequencies whose
 * distance from the centre (h//2, w//2), truncated to an integer, is r; F is the unnormalised 2-D DFT (numpy's fft2).
 */
export function radialAmplitudeProfile(x: ArrayLike<number>, h: number, w: number): Float64Array {
  if (x.length !== h * w)
    throw new LorakitError('LK_SHAPE_MISMATCH', `radialAmplitudeProfile: image has ${x.length} values, not ${h}×${w}`);
  // separable DFT: rows first (F1[y, v] = Σ_x x[y, x]·e^{−2πi·vx/w}), then columns; O(hw(h + w)), images are small
  const [re1, im1] = [new Float64Array(h * w), new Float64Array(h * w)];
  for (let y = 0; y < h; y++)
    for (let v = 0; v < w; v++) {
      let [a, b] = [0, 0];
      for (let k = 0; k < w; k++) {
        const t = (-2 * Math.PI * v * k) / w;
        a += x[y * w + k] * Math.cos(t);
        b += x[y * w + k] * Math.sin(t);
      }
      re1[y * w + v] = a;
      im1[y * w + v] = b;
    }
  const [cy, cx] = [Math.floor(h / 2), Math.floor(w / 2)];
  const rmax = Math.floor(Math.hypot(Math.max(cy, h - 1 - cy), Math.max(cx, w - 1 - cx)));
  const sum = new Float64Array(rmax + 1);
  const count = new Float64Array(rmax + 1);
  for (let u = 0; u < h; u++)
    for (let v = 0; v < w; v++) {
      let [a, b] = [0, 0];
      for (let k = 0; k < h; k++) {
        const t = (-2 * Math.PI * u * k) / h;
        const [c, s] = [Math.cos(t), Math.sin(t)];
        a += re1[k * w + v] * c - im1[k * w + v] * s;
        b += re1[k * w + v] * s + im1[k * w + v] * c;
      }
      // fftshift moves frequency (u, v) to ((u + h//2) mod h, (v + w//2) mod w): zero frequency lands on the centre
      const [sy, sx] = [(u + cy) % h, (v + cx) % w];
      const r = Math.floor(Math.hypot(sy - cy, sx - cx));
      sum[r] += Math.hypot(a, b);
      count[r]++;
    }
  return sum.map((s, r) => (count[r] ? s / count[r] : 0));
}

/** The default start of the high-frequency tail: 72 of a 512-pixel image's 362 radius bins (fft_analysis.ipynb). */
export const HIGH_FROM_FRACTION = 72 / 362;

/**
 * CMLoRA's amplitude score of images [n, c, h, w]: per image the radial profile of its channel mean, divided by its
 * maximum, averaged from radius `highFrom` (default round(HIGH_FROM_FRACTION · largest radius)); then the mean over
 * images. In [0, 1]: near 0 for smooth images, larger the more amplitude sits at high frequencies.
 */
export function cmloraFrequencyScore(images: Float32Array, shape: readonly number[], highFrom?: number): number {
  const [n, c, h, w] = shape;
  if (shape.length !== 4 || images.length !== n * c * h * w || n < 1)
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `cmloraFrequencyScore: ${images.length} values do not make at least one image of shape [${shape}]`,
    );
  let total = 0;
  for (let i = 0; i < n; i++) {
    const mean = new Float64Array(h * w);
    for (let ch = 0; ch < c; ch++) for (let k = 0; k < h * w; k++) mean[k] += images[(i * c + ch) * h * w + k] / c;
    const p = radialAmplitudeProfile(mean, h, w);
    const from = highFrom ?? Math.round(HIGH_FROM_FRACTION * (p.length - 1));
    if (!Number.isInteger(from) || from < 0 || from >= p.length)
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `cmloraFrequencyScore: highFrom must be an integer radius in 0..${p.length - 1}, got ${from}`,
      );
    const top = Math.max(...p);
    let s = 0;
    for (let r = from; r < p.length; r++) s += top > 0 ? p[r] / top : 0;
    total += s / (p.length - from);
  }
  return total / n;
}

/** The frequency order of N LoRAs: pass order (high list by falling score, then the low list) and the high count. */
export interface CmloraOrder {
  /** LoRA indices in pass order. */
  order: number[];
  /** How many of `order` form the high-frequency list (the rest: low). */
  highCount: number;
}

/**
 * Splits LoRAs by their amplitude scores: score ≥ threshold → high-frequency list (dominates early), else low
 * (default threshold: the mean score). Each list is ordered by falling score; ties keep the given order.
 */
export function cmloraFrequencyOrder(scores: readonly number[], threshold?: number): CmloraOrder {
  if (scores.length === 0 || scores.some((s) => !Number.isFinite(s)))
    throw new LorakitError('LK_INVALID_ARGUMENT', `cmloraFrequencyOrder: needs finite scores, got [${scores}]`);
  const g = threshold ?? scores.reduce((a, b) => a + b, 0) / scores.length;
  const byScore = (a: number, b: number) => scores[b] - scores[a] || a - b;
  const idx = [...scores.keys()];
  const high = idx.filter((i) => scores[i] >= g).sort(byScore);
  const low = idx.filter((i) => scores[i] < g).sort(byScore);
  return { order: [...high, ...low], highCount: high.length };
}
