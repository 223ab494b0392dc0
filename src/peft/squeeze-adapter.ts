/**
 * Post-Squeeze of a whole adapter (LoRA-Squeeze, spec methods-b §11): every adapted layer's ΔW compressed to a lower
 * rank (per-layer ranks with energy selection) and written as a plain PEFT LoRA folder, with `r` the largest rank
 * kept and `rank_pattern` naming the layers that keep fewer. A plain LoRA is squeezed through its factors
 * (squeeze.ts: QR + the r×r core; ΔW never formed); any other mergeable adapter (DoRA, VeRA, a PiSSA adapter that
 * replaced W0, ...) through a dense SVD of its effective ΔW = merged weight − W0. Trained biases and modules_to_save
 * copies are kept as they are.
 * Not here: the per-layer mathematics (squeeze.ts), the folder format (format.ts).
 */
import { LorakitError, check } from '../errors.ts';
import { type SaveAdapterOptions, saveAdapter } from './format.ts';
import { matrixDims, toMatrix } from './layers.ts';
import type { LayerInfo } from './method.ts';
import type { PeftModel } from './model.ts';
import { mergedWeight, resolveConfig, savedConfig } from './registry.ts';
import {
  type DenseSpectrumOptions,
  type RankSelection,
  type Spectrum,
  denseSpectrum,
  factorSpectrum,
  retainedEnergy,
  selectRank,
  truncatedFactors,
} from './squeeze.ts';

/** Options of `squeezeAdapter`. */
export interface SqueezeOptions extends RankSelection, SaveAdapterOptions {
  /** lora_alpha of the squeezed adapter (default: the source LoRA's, or `rank` for other methods: s' = 1). */
  alpha?: number;
  /** Settings of the dense SVD used for adapters that are not plain LoRA. */
  dense?: DenseSpectrumOptions;
}

/** What was kept of one layer. */
export interface SqueezedLayer {
  path: string;
  /** The source adapter's rank there (null for methods without one rank, e.g. VeRA's shared projections). */
  sourceRank: number | null;
  rank: number;
  /** Fraction of ‖ΔW‖²_F kept. */
  energy: number;
  /** How the spectrum was computed: from the LoRA factors, an exact dense SVD, or a randomized one. */
  via: Spectrum['via'];
}

/** What `squeezeAdapter` wrote. */
export interface SqueezeReport {
  /** The squeezed folder's adapter_config.json values that decide ranks and scales. */
  r: number;
  loraAlpha: number;
  rankPattern: Record<string, number>;
  layers: SqueezedLayer[];
  /** Trainable parameters of the source adapter's layers and of the squeezed LoRA. */
  sourceParams: number;
  params: number;
}

/** Targeting and saving fields a squeezed LoRA takes over from any source config. */
const KEPT = [
  'target_modules',
  'exclude_modules',
  'layers_to_transform',
  'layers_pattern',
  'modules_to_save',
  'task_type',
  'bias',
];

/** A regex key for rank_pattern matching exactly one module path (PEFT matches `(.*\.)?(key)$`). */
const exactKey = (path: string) => path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Writes adapter `name` of `peft`, compressed to `rank` (or by `energy`, at most `rank`), as a plain PEFT LoRA
 * folder in `dir`. The squeezed adapter applies to the same base model; scales follow its config (α/k, α/√k).
 */
export async function squeezeAdapter(
  peft: PeftModel,
  name: string,
  dir: string,
  opts: SqueezeOptions,
): Promise<SqueezeReport> {
  const a = peft.get(name);
  check(
    Number.isInteger(opts.rank) && opts.rank >= 1,
    'LK_INVALID_ARGUMENT',
    `squeeze: rank must be a positive integer, got ${opts.rank}`,
  );
  check(
    opts.energy === undefined || (opts.energy > 0 && opts.energy <= 1),
    'LK_INVALID_ARGUMENT',
    `squeeze: energy must be a fraction in (0, 1], got ${opts.energy}`,
  );
  if (!a.method.delta) {
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `squeeze: adapter "${name}" (${a.method.name}) has no ΔW to compress: ${a.method.unmergeable ?? 'it cannot merge'}`,
    );
  }
  const source = savedConfig(a.resolved);
  const plain = resolveConfig(source, `adapter "${name}" config`);
  const factors = plain.base.name === 'lora' && plain.variants.length === 0 && a.bases.size === 0;
  const spectra = new Map<string, Spectrum>();
  const sourceRanks = new Map<string, number | null>();
  for (const [path, l] of a.layers) {
    refuseGrouped(l.info, name);
    const [m, n] = matrixDims(l.info);
    if (factors) {
      const an = l.specs.find((s) => s.role === 'a')!.name;
      const bn = l.specs.find((s) => s.role === 'b')!.name;
      const r = l.settings.r as number;
      spectra.set(path, factorSpectrum(l.values[bn], l.values[an], m, r, n, l.settings.scaling));
      sourceRanks.set(path, r);
    } else {
      const v = { layer: l.info, settings: l.settings, config: a.config, p: l.values, shared: a.shared.values };
      const merged = toMatrix(l.info, mergedWeight(a.method, v, await peft.frozenWeight(l.module.weightName)));
      const w0 = toMatrix(l.info, await l.info.readWeight()); // ΔW is against the untouched base, as the folder is
      const delta = new Float64Array(m * n);
      for (let i = 0; i < delta.length; i++) delta[i] = merged[i] - w0[i];
      spectra.set(path, await denseSpectrum(delta, m, n, Math.min(opts.rank, m, n), opts.dense));
      sourceRanks.set(path, typeof l.settings?.r === 'number' ? l.settings.r : null);
    }
  }
  const ranks = new Map([...spectra].map(([p, sp]) => [p, selectRank(sp, opts)]));
  const r = Math.max(...ranks.values());
  const rankPattern = Object.fromEntries(
    [...ranks].filter(([, k]) => k !== r).map(([p, k]) => [exactKey(p), k] as [string, number]),
  );
  const loraAlpha = opts.alpha ?? (factors ? (plain.config.lora_alpha as number) : r);
  const config: Record<string, unknown> = {
    ...(factors ? source : Object.fromEntries(KEPT.filter((k) => source[k] != null).map((k) => [k, source[k]]))),
    peft_type: 'LORA',
    r,
    lora_alpha: loraAlpha,
    rank_pattern: rankPattern,
    alpha_pattern: {},
    init_lora_weights: true,
    use_rslora: factors ? plain.config.use_rslora : false,
  };
  const tmp = `${name}@squeezed`;
  const active = [...peft.activeAdapters];
  const out = await peft.addAdapter(tmp, config, { source: `adapter "${name}" squeezed to rank ${r}` });
  try {
    check(
      out.layers.size === a.layers.size && [...a.layers.keys()].every((p) => out.layers.has(p)),
      'LK_UNSUPPORTED',
      () =>
        `squeeze: the LoRA config made from adapter "${name}" targets other layers than it ` +
        `(${[...out.layers.keys()].join(', ')}); squeeze adapters whose targeting LoRA shares`,
    );
    const layers: SqueezedLayer[] = [];
    for (const [path, l] of out.layers) {
      const sp = spectra.get(path)!;
      const k = ranks.get(path)!;
      if (l.settings.r !== k) throw new Error(`internal: squeeze: ${path} got rank ${l.settings.r}, not ${k}`);
      const f = truncatedFactors(sp, k, l.settings.scaling);
      const an = l.specs.find((s) => s.role === 'a')!.name;
      const bn = l.specs.find((s) => s.role === 'b')!.name;
      l.values[an] = f.a; // a conv2d's A [k, in·kh·kw] is its [k, in, kh, kw] tensor, B [out, k] its [out, k, 1, 1]
      l.values[bn] = f.b;
      layers.push({ path, sourceRank: sourceRanks.get(path)!, rank: k, energy: retainedEnergy(sp, k), via: sp.via });
    }
    for (const [w, v] of a.weights) out.weights.set(w, v);
    for (const [path, sm] of a.modules) Object.assign(out.modules.get(path)!, { weight: sm.weight, bias: sm.bias });
    await saveAdapter(peft, tmp, dir, opts);
    const count = (x: typeof a) => [...x.layers.values()].flatMap((l) => l.specs.filter((s) => s.trainable));
    const numel = (shape: number[]) => shape.reduce((p, q) => p * q, 1);
    return {
      r,
      loraAlpha,
      rankPattern,
      layers,
      sourceParams:
        count(a).reduce((t, s) => t + numel(s.shape), 0) +
        a.shared.specs.filter((s) => s.trainable).reduce((t, s) => t + numel(s.shape), 0),
      params: count(out).reduce((t, s) => t + numel(s.shape), 0),
    };
  } finally {
    peft.deleteAdapter(tmp);
    peft.setActive(...active);
  }
}

/** A grouped Conv2d's LoRA B is block-diagonal: a squeezed B' is not, so such layers are refused. */
function refuseGrouped(layer: LayerInfo, name: string): void {
  if ((layer.conv?.groups ?? 1) > 1) {
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `squeeze: adapter "${name}" adapts ${layer.path}, a Conv2d with groups ${layer.conv!.groups}; a squeezed ` +
        "LoRA's lora_B would mix the groups. Exclude the layer, or squeeze adapters of ungrouped layers",
      { layer: layer.path },
    );
  }
}
