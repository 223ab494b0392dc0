/**
 * PeftModel: named adapters on one base model. It owns the adapters' host values (per layer and model-level),
 * the frozen weights an initialiser replaced, merges and unmerges exactly (merged weights are in-memory overrides
 * of the file-backed base, so unmerge restores the base bit for bit), and binds the active adapters into model
 * graphs (binding.ts), handing the trainer typed handles. Method-specific math stays in peft/methods/; this file is
 * the part every method shares.
 */
import { LorakitError, check } from '../errors.ts';
import { Rng, seedFrom } from '../linalg/index.ts';
import type { ModuleHooks, ModuleInfo } from '../nn/module.ts';
import { AdapterBinding, type BindOptions } from './binding.ts';
import { isTargeted, noTargetsError, type Targeting } from './config.ts';
import { layerInfo, unsupportedLayer } from './layers.ts';
import type { AdapterMethod, LayerInfo, ParamSpec, StepInputSpec } from './method.ts';
import { mergedWeight, type Resolved, resolveConfig } from './registry.ts';

/** What the adapter framework needs from a base model. */
export interface AdaptableBase {
  modules: readonly ModuleInfo[];
  /** The stored value of an HF weight, as f32 on the host. */
  readWeight(name: string): Promise<Float32Array>;
  /** The output head (excluded from "all-linear"), e.g. lm_head. */
  outputHead: string | null;
}

/** One adapted layer: where, with which settings, and the adapter's tensors there. */
export interface AdapterLayer {
  info: LayerInfo;
  module: ModuleInfo;
  settings: any;
  specs: ParamSpec[];
  values: Record<string, Float32Array>;
  /** The values right after initialisation, kept when the initialiser replaced the frozen weight. */
  initial: Record<string, Float32Array> | null;
}

/** One adapter: its composed method, config, per-layer and model-level tensors, trained weights. */
export interface Adapter {
  name: string;
  /** The method with the variants its config asks for composed in. */
  method: AdapterMethod;
  resolved: Resolved;
  config: Targeting & Record<string, any>;
  layers: Map<string, AdapterLayer>;
  /** Model-level tensors (VeRA's projections). */
  shared: { specs: ParamSpec[]; values: Record<string, Float32Array> };
  /** Whole base weights this adapter trains and saves (modules_to_save, trained biases), by HF weight name. */
  weights: Map<string, Float32Array>;
  /** Frozen weights this adapter's initialiser replaced (PiSSA's residual), by HF weight name. */
  bases: Map<string, Float32Array>;
  stepInputs: StepInputSpec<any>[];
}

/** The graph-input name of a layer tensor (opaque: nothing parses it; checkpoints are keyed by it). */
export const paramKey = (adapter: string, path: string, param: string) => `${path}.${param}#${adapter}`;
/** The graph-input name of a model-level tensor. */
export const sharedKey = (adapter: string, name: string) => `${name}#${adapter}`;
/** The graph-input name of a per-step input. */
export const stepKey = (adapter: string, s: { name: string; layer: string | null }) =>
  `${s.layer === null ? '' : `${s.layer}.`}${s.name}@${adapter}`;

/** Options of addAdapter. */
export interface AddAdapterOptions {
  /** Seeds every random initialisation (each layer draws from its own stream). */
  seed?: number;
  /** Names the config in errors. */
  source?: string;
  /** Mean gradients of the loss with respect to these frozen weights (stored layout) over `batches` batches. */
  calibrate?: (layers: readonly LayerInfo[], batches: number) => Promise<Map<string, Float32Array>>;
}

export class PeftModel {
  readonly adapters = new Map<string, Adapter>();
  private active: string[] = [];
  private enabled = true;
  private mergedNames: string[] = [];
  private mergedWeights = new Map<string, Float32Array>();
  /** Bumped whenever adapter values change, so generate() rebuilds its graphs only then. */
  private version = 0;

  constructor(readonly base: AdaptableBase) {}

  /** Adds an adapter from a PEFT-style config and initialises its tensors (deterministic in `seed`). It becomes active. */
  async addAdapter(name: string, configJson: unknown, opts: AddAdapterOptions = {}): Promise<Adapter> {
    const { seed = 0, source = `adapter "${name}" config` } = opts;
    check(
      !this.adapters.has(name),
      'LK_INVALID_ARGUMENT',
      `an adapter named "${name}" already exists; delete it or pick another name`,
    );
    const resolved = resolveConfig(configJson, source);
    const { method, config } = resolved;
    const infos = this.targets(method, config, source);
    const settings = new Map(infos.map((l) => [l.path, method.settings?.(config, l)]));
    for (const l of infos) method.checkLayer?.(l, settings.get(l.path), config, source);
    const withSettings = infos.map((layer) => ({ layer, settings: settings.get(layer.path) }));
    const sharedSpecs = method.shared?.(config, infos) ?? [];
    const sharedValues =
      (await method.initShared?.({ config, layers: infos, rng: new Rng(seedFrom(seed, '#shared')) })) ?? {};
    checkValues(method, 'shared tensors', sharedSpecs, sharedValues);
    const calibration = method.calibration?.(config) ?? null;
    let grads: Map<string, Float32Array> | null = null;
    if (calibration) {
      if (!opts.calibrate) {
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          `${source}: ${method.name} initialises from gradients on calibration batches; pass calibrate (the trainer ` +
            'does, from the training data)',
        );
      }
      grads = await opts.calibrate(infos, calibration.batches);
    }
    const adapter: Adapter = {
      name,
      method,
      resolved,
      config,
      layers: new Map(),
      weights: new Map(),
      bases: new Map(),
      shared: { specs: sharedSpecs, values: sharedValues },
      stepInputs: method.stepInputs?.(config, withSettings) ?? [],
    };
    for (const info of infos) {
      const m = this.base.modules.find((x) => x.path === info.path)!;
      const s = settings.get(info.path);
      const specs = method.params(info, s, config);
      const r = await method.init({
        layer: info,
        settings: s,
        config,
        shared: sharedValues,
        rng: new Rng(seedFrom(seed, info.path)),
        readBase: () => this.frozenWeight(m.weightName),
        calibrationGrad: grads?.get(info.path),
      });
      checkValues(method, info.path, specs, r.values);
      if (r.base) {
        check(
          !this.replacedBy(m.weightName),
          'LK_INVALID_ARGUMENT',
          `${source}: ${info.path}'s weight was already replaced by adapter "${this.replacedBy(m.weightName)}"'s ` +
            'initialisation; two base-replacing adapters cannot share a layer',
        );
        adapter.bases.set(m.weightName, r.base);
      }
      const initial = r.base ? copyValues(r.values) : null;
      adapter.layers.set(info.path, { info, module: m, settings: s, specs, values: r.values, initial });
    }
    for (const w of this.extraWeightNames(adapter))
      adapter.weights.set(w, Float32Array.from(await this.base.readWeight(w)));
    this.adapters.set(name, adapter);
    this.version++;
    this.active = [...this.active, name];
    return adapter;
  }

  /** The layers `config` targets, refusing explicitly targeted layers the method cannot wrap. */
  private targets(method: AdapterMethod, config: Targeting & Record<string, any>, source: string): LayerInfo[] {
    const infos: LayerInfo[] = [];
    for (const m of this.base.modules) {
      const info = layerInfo(m, config.layers_pattern ?? null, (n) => this.base.readWeight(n));
      if (!isTargeted(config, info, this.base.outputHead)) continue;
      if (!method.layers.includes(info.kind)) throw unsupportedLayer(method.name, info, method.layers);
      infos.push(info);
    }
    if (infos.length === 0) {
      throw noTargetsError(
        config.target_modules,
        this.base.modules.map((m) => m.path),
        source,
      );
    }
    return infos;
  }

  /** The frozen weight graphs use: a replacement made by an adapter's initialiser, else the stored W0. */
  async frozenWeight(weightName: string): Promise<Float32Array> {
    const owner = this.replacedBy(weightName);
    return owner ? this.get(owner).bases.get(weightName)! : this.base.readWeight(weightName);
  }

  private replacedBy(weightName: string): string | undefined {
    for (const a of this.adapters.values()) if (a.bases.has(weightName)) return a.name;
    return undefined;
  }

  /** modules_to_save weights and trained biases (bias "all" / "lora_only"). */
  private extraWeightNames(a: Adapter): string[] {
    const names: string[] = [];
    const save: string[] = a.config.modules_to_save ?? [];
    for (const m of this.base.modules) {
      if (save.some((k) => m.path === k || m.path.endsWith(`.${k}`))) {
        names.push(m.weightName);
        if (m.kind !== 'embedding' && m.biasName) names.push(m.biasName);
      }
    }
    const bias = a.config.bias as string | undefined;
    for (const m of this.base.modules) {
      if (m.kind === 'embedding' || !m.biasName || names.includes(m.biasName)) continue;
      if (bias === 'all' || (bias === 'lora_only' && a.layers.has(m.path))) names.push(m.biasName);
    }
    return names;
  }

  /** Makes `names` the active adapters (their outputs are summed in this order). */
  setActive(...names: string[]): void {
    for (const n of names) this.get(n);
    this.active = names;
  }
  get activeAdapters(): readonly string[] {
    return this.active;
  }
  /** Whether adapters apply (false after disable()). */
  get isEnabled(): boolean {
    return this.enabled;
  }

  /** Runs the base model: adapters are skipped (merged ones are unmerged first, as PEFT does). */
  disable(): void {
    this.unmerge();
    this.enabled = false;
  }
  enable(): void {
    this.enabled = true;
  }

  deleteAdapter(name: string): void {
    check(!this.mergedNames.includes(name), 'LK_INVALID_ARGUMENT', `adapter "${name}" is merged; unmerge() first`);
    this.adapters.delete(name);
    this.active = this.active.filter((n) => n !== name);
    this.version++;
  }

  /** Host values of the adapter's trainable tensors, by graph-input name (feed these to a train step). */
  trainableValues(name: string): Map<string, Float32Array> {
    const a = this.get(name);
    const out = new Map<string, Float32Array>();
    for (const s of a.shared.specs) if (s.trainable) out.set(sharedKey(name, s.name), a.shared.values[s.name]);
    for (const [path, l] of a.layers) {
      for (const s of l.specs) if (s.trainable) out.set(paramKey(name, path, s.name), l.values[s.name]);
    }
    for (const [w, v] of a.weights) out.set(w, v);
    return out;
  }

  /** Takes trained values back (by graph-input name, as from trainableValues); unknown names are ignored. */
  setValues(name: string, values: ReadonlyMap<string, Float32Array> | Record<string, Float32Array>): void {
    const a = this.get(name);
    this.version++;
    const get = (k: string) => (values instanceof Map ? values.get(k) : (values as Record<string, Float32Array>)[k]);
    const take = (key: string, into: Record<string, Float32Array>, param: string) => {
      const v = get(key);
      if (!v) return;
      check(
        v.length === into[param].length,
        'LK_SHAPE_MISMATCH',
        `${key}: ${v.length} values, expected ${into[param].length}`,
      );
      into[param] = v;
    };
    for (const s of a.shared.specs) take(sharedKey(name, s.name), a.shared.values, s.name);
    for (const [path, l] of a.layers) for (const s of l.specs) take(paramKey(name, path, s.name), l.values, s.name);
    for (const w of a.weights.keys()) {
      const v = get(w);
      if (v) a.weights.set(w, v);
    }
  }

  /**
   * The values of adapter `name`'s per-step inputs for one optimizer step, by graph-input name, drawn in a fixed
   * order from `rng`; `params` are the current trained values by graph-input name (the trainer holds them).
   */
  stepInputValues(
    name: string,
    ctx: { step: number; rng: Rng; params: ReadonlyMap<string, Float32Array> },
  ): Record<string, Float32Array | BigInt64Array> {
    const a = this.get(name);
    const out: Record<string, Float32Array | BigInt64Array> = {};
    for (const s of a.stepInputs) {
      const l = s.layer === null ? null : a.layers.get(s.layer)!;
      const values =
        l &&
        Object.fromEntries(
          l.specs.map((p) => [p.name, ctx.params.get(paramKey(name, l.info.path, p.name)) ?? l.values[p.name]]),
        );
      out[stepKey(name, s)] = s.train({ config: a.config, step: ctx.step, rng: ctx.rng, values });
    }
    return out;
  }

  /** HF weight names that train with adapter `name` (make them WeightSource trainable inputs). */
  trainableWeights(name: string): string[] {
    return [...this.get(name).weights.keys()];
  }

  /**
   * In-memory weights a graph must use: replaced frozen weights, merged weights, and active adapters' saved modules
   * (not those of the adapter being trained, whose weights are graph inputs).
   */
  weightOverrides(train?: string): Map<string, Float32Array> {
    const out = new Map<string, Float32Array>();
    for (const a of this.adapters.values()) for (const [w, v] of a.bases) out.set(w, v);
    for (const [w, v] of this.mergedWeights) out.set(w, v);
    if (this.enabled)
      for (const n of this.active) if (n !== train) for (const [w, v] of this.get(n).weights) out.set(w, v);
    return out;
  }

  /** Binds the active, unmerged adapters into one graph: its module hooks and the handles a trainer needs. */
  bind(opts: BindOptions = {}): AdapterBinding {
    if (opts.train) this.get(opts.train);
    const applied = this.enabled
      ? this.active.filter((n) => !this.mergedNames.includes(n)).map((n) => this.get(n))
      : [];
    return new AdapterBinding(applied, opts);
  }

  /** The module hooks of `bind(opts)`. */
  hooks(opts: BindOptions = {}): ModuleHooks {
    return this.bind(opts).hooks;
  }

  /** The active adapters as generate()'s adapter option (hooks per graph, merged or saved weights as overrides). */
  generationAdapter(): { hooks: () => ModuleHooks; overrides: Map<string, Float32Array>; key: string } {
    const key = JSON.stringify({
      active: this.active,
      merged: this.mergedNames,
      enabled: this.enabled,
      v: this.version,
    });
    return { hooks: () => this.hooks(), overrides: this.weightOverrides(), key };
  }

  /**
   * Merges adapters (default: the active ones) into the frozen weights; the non-finite check runs once, here. Every
   * adapter is checked for mergeability (method and each layer) before any weight changes.
   */
  async merge(names: string[] = this.active): Promise<void> {
    const todo = names.filter((n) => !this.mergedNames.includes(n)).map((n) => this.get(n));
    for (const a of todo) this.checkMergeable(a);
    for (const a of todo) {
      const { name, method: m } = a;
      for (const [path, l] of a.layers) {
        const wn = l.module.weightName;
        const w0 = this.mergedWeights.get(wn) ?? (await this.frozenWeight(wn));
        const v = { layer: l.info, settings: l.settings, config: a.config, p: l.values, shared: a.shared.values };
        const w = mergedWeight(m, v, w0);
        if (!w.every(Number.isFinite)) {
          throw new LorakitError(
            'LK_INVALID_ARGUMENT',
            `merging adapter "${name}" into ${path} gives non-finite weights; the adapter is broken`,
          );
        }
        this.mergedWeights.set(wn, w);
      }
      for (const [w, v] of a.weights) this.mergedWeights.set(w, v);
      this.mergedNames.push(name);
    }
    this.version++;
  }

  /** Throws LK_UNSUPPORTED when the adapter's method cannot merge, or cannot merge one of its layers. */
  private checkMergeable(a: Adapter): void {
    const m = a.method;
    const refuse = (why: string) => {
      throw new LorakitError('LK_UNSUPPORTED', `adapter "${a.name}" (${m.name}) cannot be merged: ${why}`);
    };
    if (!m.delta) refuse(m.unmergeable ?? 'it has no merge rule');
    for (const l of a.layers.values()) {
      const why = m.unmergeableLayer?.(l.info, l.settings, a.config) ?? null;
      if (why !== null) refuse(`${l.info.path}: ${why}; the adapter works unmerged`);
    }
  }

  /** Restores the frozen weights exactly (merged copies are dropped; replaced weights stay, as in PEFT). */
  unmerge(): void {
    this.mergedWeights.clear();
    this.mergedNames = [];
    this.version++;
  }
  get merged(): readonly string[] {
    return this.mergedNames;
  }

  get(name: string): Adapter {
    const a = this.adapters.get(name);
    if (!a) {
      const known = [...this.adapters.keys()].join(', ') || '(none)';
      throw new LorakitError('LK_INVALID_ARGUMENT', `no adapter named "${name}"; adapters: ${known}`);
    }
    return a;
  }
}

/** Checks that an initialiser returned every tensor with its spec's size (a bug in the method otherwise). */
function checkValues(method: AdapterMethod, where: string, specs: ParamSpec[], values: Record<string, Float32Array>) {
  for (const s of specs) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    if (values[s.name]?.length !== n) {
      throw new Error(
        `internal: ${method.name} initialised ${where} ${s.name} with ${values[s.name]?.length} values, not ${n}`,
      );
    }
  }
}

const copyValues = (v: Record<string, Float32Array>) =>
  Object.fromEntries(Object.entries(v).map(([k, x]) => [k, Float32Array.from(x)]));
