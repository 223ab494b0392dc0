/**
 * PeftModel: named adapters on one base model. It owns the adapters' host values (per layer and model-level),
 * the frozen weights an initialiser replaced, merges and unmerges exactly (merged weights are in-memory overrides
 * of the file-backed base, so unmerge restores the base bit for bit), and binds the active adapters into model
 * graphs (binding.ts), handing the trainer typed handles. Method-specific math stays in peft/methods/; this file is
 * the part every method shares.
 */
import { randomHex } from '../io/host.ts';
import { LorakitError, check } from '../errors.ts';
import { Rng, seedFrom } from '../linalg/index.ts';
import type { ModuleHooks, ModuleInfo } from '../nn/module.ts';
import { AdapterBinding, type BindOptions } from './binding.ts';
import { isTargeted, noLayersError, noTargetsError, type Targeting } from './config.ts';
import { layerInfo, unsupportedLayer } from './layers.ts';
import type { AdapterMethod, LayerInfo, LayerStepView, ParamSpec, StepInputSpec } from './method.ts';
import { canMerge, mergedWeight, type Resolved, resolveConfig } from './registry.ts';

/** What the adapter framework needs from a base model. */
export interface AdaptableBase {
  modules: readonly ModuleInfo[];
  /** HF names of every parameter the model reads (norms included), for bias "all"; default: the modules' own. */
  parameters?: readonly string[];
  /** The stored value of an HF weight, as f32 on the host. */
  readWeight(name: string): Promise<Float32Array>;
  /** The dtype an HF weight is stored in (safetensors names: F32, BF16, ...); default F32 (in-memory weights). */
  weightDtype?(name: string): string;
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
  /** Base parameters this adapter trains in place and saves (biases, with bias "all" / "lora_only"), by HF name. */
  weights: Map<string, Float32Array>;
  /** Trained copies of whole modules (modules_to_save), by module path; tied modules share one copy. */
  modules: Map<string, SavedModule>;
  /** Frozen weights this adapter's initialiser replaced (PiSSA's residual), by HF weight name. */
  bases: Map<string, Float32Array>;
  stepInputs: StepInputSpec<any>[];
}

/**
 * A trained copy of a base module (PEFT's ModulesToSaveWrapper): the module computes with `weight` and `bias`
 * instead of the base's. With ensure_weight_tying, modules tied to one weight (a tied embedding and LM head) share
 * one copy: `owner` is the path whose copy they use.
 */
export interface SavedModule {
  module: ModuleInfo;
  owner: string;
  weight: Float32Array;
  bias: Float32Array | null;
}

/** The graph-input name of a layer tensor (opaque: nothing parses it; checkpoints are keyed by it). */
export const paramKey = (adapter: string, path: string, param: string) => `${path}.${param}#${adapter}`;
/** The graph-input name of a saved module's weight or bias. */
export const moduleKey = (adapter: string, path: string, param: 'weight' | 'bias') =>
  `${path}.modules_to_save.${param}#${adapter}`;
/** The graph-input name of a model-level tensor. */
export const sharedKey = (adapter: string, name: string) => `${name}#${adapter}`;
/** The state name of slot `slot` of a layer's update rule (opaque; checkpoints are keyed by it). */
export const ruleStateKey = (adapter: string, path: string, slot: string) => `${paramKey(adapter, path, slot)}::rule`;
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
  /** The saved values are read right after (loadAdapter sets it): initialisers may skip work (InitContext.loading). */
  loading?: boolean;
}

export class PeftModel {
  readonly adapters = new Map<string, Adapter>();
  private active: string[] = [];
  private enabled = true;
  private mergedNames: string[] = [];
  private mergedWeights = new Map<string, Float32Array>();
  /** Bumped whenever adapter values change, so generate() rebuilds its graphs only then. */
  private version = 0;
  /**
   * Tells this PeftModel's generation keys from another's over the same model: generate() caches graphs per model and
   * key, and two PeftModels with equal adapter names and versions would otherwise share the first one's graph.
   */
  private readonly id = randomHex(16);

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
    const infos = targetLayers(this.base, method, config, source);
    const settings = new Map(infos.map((l) => [l.path, method.settings?.(config, l)]));
    for (const l of infos) method.checkLayer?.(l, settings.get(l.path), config, source);
    const withSettings = infos.map((layer) => ({ layer, settings: settings.get(layer.path) }));
    const sharedSpecs = method.shared?.(config, infos) ?? [];
    const sharedValues =
      (await method.initShared?.({ config, layers: infos, rng: new Rng(seedFrom(seed, '#shared')) })) ?? {};
    checkValues(method, 'shared tensors', sharedSpecs, sharedValues);
    const joint = await method.jointInit?.({ config, layers: infos, rng: new Rng(seedFrom(seed, '#joint')) });
    const loading = opts.loading ?? false;
    const calibration = method.calibration?.(config, loading) ?? null;
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
      modules: new Map(),
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
        joint: joint?.get(info.path),
        loading,
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
    for (const w of this.trainedBiases(adapter))
      adapter.weights.set(w, Float32Array.from(await this.base.readWeight(w)));
    adapter.modules = await this.savedModules(config);
    this.adapters.set(name, adapter);
    this.version++;
    this.active = [...this.active, name];
    return adapter;
  }

  /**
   * Replaces the frozen weight `weightName` (stored layout) under adapter `name`, as an initialiser's `base` does,
   * or restores W0 with null: a backbone that moves between rounds (FedSmoothLoRA merges the global LoRA into it).
   */
  replaceFrozenWeight(name: string, weightName: string, value: Float32Array | null): void {
    const owner = this.replacedBy(weightName);
    check(
      owner === undefined || owner === name,
      'LK_INVALID_ARGUMENT',
      `${weightName} is replaced by adapter "${owner}" already; adapter "${name}" cannot replace it too`,
    );
    if (value) this.get(name).bases.set(weightName, value);
    else this.get(name).bases.delete(weightName);
    this.version++;
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

  /**
   * The base parameters trained in place: with bias "all" every parameter named bias (norms too, as PEFT trains every
   * parameter whose name contains "bias"), with "lora_only" the biases of adapted layers; none of saved modules.
   */
  private trainedBiases(a: Adapter): string[] {
    const saved = new Set(this.base.modules.filter((m) => isSaved(a.config, m.path)).map((m) => m.path));
    const savedBias = (n: string) =>
      this.base.modules.some((m) => saved.has(m.path) && m.kind !== 'embedding' && m.biasName === n);
    const all =
      this.base.parameters ??
      this.base.modules.flatMap((m) => (m.kind !== 'embedding' && m.biasName ? [m.biasName] : []));
    const bias = a.config.bias as string | undefined;
    if (bias === 'all') return all.filter((n) => /(^|\.)bias$/.test(n) && !savedBias(n));
    if (bias !== 'lora_only') return [];
    return this.base.modules.flatMap((m) =>
      m.kind !== 'embedding' && m.biasName && a.layers.has(m.path) && !saved.has(m.path) ? [m.biasName] : [],
    );
  }

  /**
   * Copies of the modules_to_save modules. On a model whose embedding and LM head are one weight, each saved module
   * gets its own copy (the other keeps the base weight, as in PEFT) unless ensure_weight_tying: then every module
   * of that weight uses the first named one's copy.
   */
  private async savedModules(config: Targeting & Record<string, any>): Promise<Map<string, SavedModule>> {
    const out = new Map<string, SavedModule>();
    const named = this.base.modules.filter((m) => isSaved(config, m.path));
    const read = (n: string) => this.base.readWeight(n).then((v) => Float32Array.from(v));
    for (const m of named) {
      const bias = m.kind !== 'embedding' && m.biasName ? await read(m.biasName) : null;
      out.set(m.path, { module: m, owner: m.path, weight: await read(m.weightName), bias });
    }
    if (config.ensure_weight_tying) {
      for (const m of named) {
        if (out.get(m.path)!.owner !== m.path) continue; // already tied to an earlier one
        for (const t of this.base.modules) {
          if (t.path !== m.path && t.weightName === m.weightName) out.set(t.path, { ...out.get(m.path)!, module: t });
        }
      }
    }
    return out;
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
    for (const [path, sm] of a.modules) {
      if (sm.owner !== path) continue; // a tied module trains its owner's copy
      out.set(moduleKey(name, path, 'weight'), sm.weight);
      if (sm.bias) out.set(moduleKey(name, path, 'bias'), sm.bias);
    }
    return out;
  }

  /** Host values of the adapter's buffers (frozen 'state' tensors the forward pass updates), by graph-input name. */
  stateValues(name: string): Map<string, Float32Array> {
    const a = this.get(name);
    const out = new Map<string, Float32Array>();
    for (const [path, l] of a.layers) {
      for (const s of l.specs)
        if (!s.trainable && s.role === 'state') out.set(paramKey(name, path, s.name), l.values[s.name]);
    }
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
    for (const sm of a.modules.values()) {
      const w = get(moduleKey(name, sm.owner, 'weight'));
      const b = get(moduleKey(name, sm.owner, 'bias'));
      if (w) sm.weight = w;
      if (b) sm.bias = b;
    }
  }

  /**
   * The values of adapter `name`'s per-step inputs for one optimizer step, by graph-input name, drawn in a fixed
   * order from `rng`; `params` are the current trained values by graph-input name and `state` the optimizer and
   * update-rule state by state name (the trainer holds both).
   */
  stepInputValues(
    name: string,
    ctx: {
      step: number;
      rng: Rng;
      params: ReadonlyMap<string, Float32Array>;
      state?: ReadonlyMap<string, Float32Array>;
    },
  ): Record<string, Float32Array | BigInt64Array> {
    const a = this.get(name);
    const out: Record<string, Float32Array | BigInt64Array> = {};
    const current = (l: AdapterLayer) =>
      Object.fromEntries(
        l.specs.map((p) => [p.name, ctx.params.get(paramKey(name, l.info.path, p.name)) ?? l.values[p.name]]),
      );
    let views: Map<string, LayerStepView> | null = null;
    const layerViews = () => {
      views ??= new Map(
        [...a.layers].map(([path, l]) => {
          const slots = a.method.update?.state(l.info, l.settings, a.config) ?? null;
          const state =
            slots &&
            Object.fromEntries(
              slots.map((s) => [
                s.name,
                ctx.state?.get(ruleStateKey(name, path, s.name)) ??
                  new Float32Array(s.shape.reduce((x, y) => x * y, 1)),
              ]),
            );
          return [path, { info: l.info, values: current(l), state }];
        }),
      );
      return views;
    };
    for (const s of a.stepInputs) {
      const l = s.layer === null ? null : a.layers.get(s.layer)!;
      const values = l && current(l);
      const layers = l ? null : layerViews();
      out[stepKey(name, s)] = s.train({ config: a.config, step: ctx.step, rng: ctx.rng, values, layers });
    }
    return out;
  }

  /** HF names of the base parameters adapter `name` trains in place (make them WeightSource trainable inputs). */
  trainableWeights(name: string): string[] {
    return [...this.get(name).weights.keys()];
  }

  /**
   * In-memory weights a graph must use: replaced frozen weights, merged weights, and the biases active adapters
   * trained (not those of the adapter being trained: graph inputs). Saved modules apply through bind().
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
      id: this.id,
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
      for (const [path, sm] of a.modules) {
        const sharing = this.base.modules.filter((m) => m.weightName === sm.module.weightName).map((m) => m.path);
        if (sharing.some((p) => a.modules.get(p)?.owner !== sm.owner)) {
          throw new LorakitError(
            'LK_UNSUPPORTED',
            `adapter "${name}" trains a copy of ${path}, whose weight ${sm.module.weightName} is tied to ` +
              `${sharing.filter((p) => p !== path).join(', ')}; merging would change both. Train with ` +
              'ensure_weight_tying to tie the copies, or keep the adapter unmerged',
          );
        }
        this.mergedWeights.set(sm.module.weightName, sm.weight);
        const b = sm.module.kind !== 'embedding' ? sm.module.biasName : null;
        if (b && sm.bias) this.mergedWeights.set(b, sm.bias);
      }
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
    if (!canMerge(m)) refuse(m.unmergeable ?? 'it has no merge rule');
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

/** The layers `config` targets on `base`, refusing explicitly targeted layers the method cannot wrap. */
export function targetLayers(
  base: AdaptableBase,
  method: AdapterMethod,
  config: Targeting & Record<string, any>,
  source: string,
): LayerInfo[] {
  const infos: LayerInfo[] = [];
  const all = base.modules.map((m) =>
    layerInfo(m, config.layers_pattern ?? null, {
      read: (n) => base.readWeight(n),
      dtype: (n) => base.weightDtype?.(n) ?? 'F32',
    }),
  );
  for (const info of all) {
    if (!isTargeted(config, info, base.outputHead)) continue;
    if (!method.layers.includes(info.kind)) throw unsupportedLayer(method.name, info, method.layers);
    infos.push(info);
  }
  if (infos.length === 0 && config.layers_to_transform != null) {
    // target_modules alone selects modules: blame the layer selection, and say which layers the model has
    const anyLayer = { ...config, layers_to_transform: null };
    if (all.some((info) => isTargeted(anyLayer, info, base.outputHead)))
      throw noLayersError(config.layers_to_transform, all, config.layers_pattern ?? null, source);
  }
  if (infos.length === 0) {
    throw noTargetsError(
      config.target_modules,
      base.modules.map((m) => m.path),
      source,
    );
  }
  return infos;
}

/** Checks that an initialiser returned every tensor with its spec's size (a bug in the method otherwise). */
/** Whether modules_to_save names the module at `path` (its name or a dotted suffix). */
const isSaved = (config: Record<string, any>, path: string) =>
  ((config.modules_to_save ?? []) as string[]).some((k) => path === k || path.endsWith(`.${k}`));

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
