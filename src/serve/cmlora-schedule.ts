/**
 * CMLoRA's switch and caching schedule (Zou et al., "Cached Multi-LoRA Composition for Multi-Concept Image
 * Generation", ICLR 2025), as the authors' pipeline_offline.py runs it for LoRAs of one frequency class (spec
 * methods-c §4; read in Yqcca/CMLoRA@6b51224):
 *  - refresh steps `interval_seq`: cache interval 1 → every step; c > 1 → every c-th step; 0 → the non-uniform
 *    sequence (every 2nd step in the first 37.5%, every 3rd up to 87.5%, every 2nd after);
 *  - at each refresh step the next LoRA in order (a counter mod N) is refreshed and becomes the dominant one until
 *    the next refresh;
 *  - caching ("quick_replicate") is on only for intervals c > 1: a LoRA runs its full U-Net pass at the first step
 *    (no cache yet) and when refreshed, and reuses its cached deep features otherwise.
 *  - with a frequency split (cmlora-frequency.ts: the passes ordered high-frequency list first, `highCount` of them),
 *    the counter runs mod highCount, and after the switch step (the code's `i <= 120` of 220 steps) the dominant index
 *    is shifted up by one, so the cycle leaves the first high-frequency LoRA and reaches the first low-frequency one.
 * Differs from the code: after the switch the code's `prv_features_list[1:][k] = None` clears a slice copy, so no
 * cache is refreshed there; here the newly dominant LoRA's cache is refreshed, as the spec (§4 step 4) describes.
 * Not built: the code's decay of the dominant coefficient, which never reaches the weights (they are computed once);
 * the online variant (regime change when the running latent's amplitude score falls below g).
 * Not here: the weights and the passes (diffusion-compose.ts).
 */
import { LorakitError } from '../errors.ts';

/** What happens at one denoising step. */
export interface CmloraStep {
  /** The LoRA refreshed at this step, or null. */
  refreshed: number | null;
  /** The dominant LoRA. */
  dominant: number;
  /** Per LoRA: whether its pass is full (true) or shallow on its cached deep features (false). */
  full: boolean[];
}

/** The whole schedule of one run. */
export interface CmloraPlan {
  refreshSteps: number[];
  caching: boolean;
  steps: CmloraStep[];
}

/** The refresh steps (`interval_seq`) of `steps` inference steps at cache interval c. */
export function cmloraRefreshSteps(steps: number, cacheInterval: number): number[] {
  if (!Number.isInteger(cacheInterval) || cacheInterval < 0)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `cmlora: cache interval must be an integer ≥ 0, got ${cacheInterval}`,
    );
  const range = (a: number, b: number, by: number) => {
    const out: number[] = [];
    for (let i = a; i < b; i += by) out.push(i);
    return out;
  };
  if (cacheInterval === 0) {
    const [a, b] = [Math.floor(0.375 * steps), Math.floor(0.875 * steps)];
    return [...range(0, a, 2), ...range(a, b, 3), ...range(b, steps, 2)].sort((x, y) => x - y);
  }
  return range(0, steps, cacheInterval);
}

/** The frequency split a schedule follows: the first `highCount` passes are the high-frequency list. */
export interface CmloraSplit {
  highCount: number;
  /** Last step of the high-frequency regime (default round(steps · 120/220), the code's 120 of 220 steps). */
  switchStep?: number;
}

/**
 * The schedule of N LoRAs over `steps` inference steps; without `split` (or with every LoRA in one list) all LoRAs
 * take turns throughout.
 */
export function cmloraSchedule(steps: number, n: number, cacheInterval: number, split?: CmloraSplit): CmloraPlan {
  if (!Number.isInteger(n) || n < 1)
    throw new LorakitError('LK_INVALID_ARGUMENT', `cmlora: needs at least one LoRA, got ${n}`);
  if (split && (!Number.isInteger(split.highCount) || split.highCount < 0 || split.highCount > n))
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `cmlora: highCount must be an integer in 0..${n} (the LoRAs), got ${split.highCount}`,
    );
  // one list (no low-frequency LoRA, or no high one): the code's `len(abs_list) == 0` branch, every LoRA in turn
  const twoLists = split !== undefined && split.highCount > 0 && split.highCount < n;
  const cycle = twoLists ? split.highCount : n;
  const switchStep = split?.switchStep ?? Math.round((steps * 120) / 220);
  const shift = (i: number) => (twoLists && i > switchStep ? 1 : 0);
  const refreshSteps = cmloraRefreshSteps(steps, cacheInterval);
  const refresh = new Set(refreshSteps);
  const caching = cacheInterval > 1;
  const hasCache = Array.from({ length: n }, () => false);
  let counter = 0;
  const out: CmloraStep[] = [];
  for (let i = 0; i < steps; i++) {
    let refreshed: number | null = null;
    if (refresh.has(i)) {
      refreshed = (counter % cycle) + shift(i);
      hasCache[refreshed] = false; // its cache is dropped: a full pass now
      counter++;
    }
    const full = hasCache.map((c) => !caching || !c);
    for (let k = 0; k < n; k++) hasCache[k] = true;
    out.push({ refreshed, dominant: ((((counter - 1) % cycle) + cycle) % cycle) + shift(i), full });
  }
  return { refreshSteps, caching, steps: out };
}
