/**
 * PeftModel: named adapters on one base model. It owns the adapters' host values, builds the ModuleHooks through
 * which every model graph applies the active adapters, merges and unmerges exactly (merged weights are in-memory
 * overrides of the file-backed base, so unmerge restores W0 bit for bit), and says which tensors train.
 * Method-specific math stays in peft/methods/; this file is the part every method shares.
 */
import { LorakitError, check } from '../errors.ts';
import { type Tensor, dropout as dropoutFn } from '../graph/index.ts';
import { Rng, seedFrom } from '../linalg/index.ts';
import type { ModuleHooks, ModuleInfo, LinearModule, EmbeddingModule, Conv2dInfo } from '../nn/module.ts';
import type { AdapterMethod, LayerInfo, LayerSettings, ParamSpec } from './method.ts';
import { isTargeted, layerIndexOf, noTargetsError, type Targeting } from './config.ts';
import { methodFor, METHODS } from './methods/index.ts';

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
  settings: LayerSettings;
  specs: ParamSpec[];
  values: Record<string, Float32Array>;
}

export interface Adapter {
  name: string;
  method: AdapterMethod<any>;
  config: Targeting & Record<string, any>;
  layers: Map<string, AdapterLayer>;
  /** Whole base weights this adapter trains and saves (modules_to_save, trained biases), by HF weight name. */
  weights: Map<string, Float32Array>;
}

/** The graph-input name of an adapter tensor (PEFT's in-memory key with the adapter name). */
export const paramKey = (adapter: string, path: string, param: string) => `${path}.${param}#${adapter}`;

export interface HookOptions {
  /** The adapter whose tensors become graph inputs (training); every other adapter is baked in as constants. */
  train?: string;
  /** A scalar f32 graph input that seeds dropout masks; without it, dropout is off (inference). */
  dropoutSeed?: Tensor;
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

  /** Adds an adapter from a PEFT-style config and initialises its tensors (deterministic in `seed`). It becomes active.
   * */
  async addAdapter(
    name: string,
    configJson: unknown,
    { seed = 0, source = `adapter "${name}" config` } = {},
  ): Promise<Adapter> {
    check(
      !this.adapters.has(name),
      'LK_INVALID_ARGUMENT',
      `an adapter named "${name}" already exists; delete it or pick another name`,
    );
    const type = String((configJson as { peft_type?: unknown })?.peft_type ?? 'LORA');
    const method = methodFor(type);
    if (!method) {
      throw new LorakitError(
        'LK_UNSUPPORTED',
        `${source}: peft_type "${type}" is not supported; lorakit supports ` +
          `${METHODS.map((m) => m.peftType).join(', ')}`,
      );
    }
    const config = method.parseConfig(configJson, source) as Adapter['config'];
    const adapter: Adapter = { name, method, config, layers: new Map(), weights: new Map() };
    for (const m of this.base.modules) {
      if (m.kind === 'conv2d') continue; // no method wraps Conv2d yet
      const info = this.layerInfo(m, config);
      if (!method.layers.includes(info.kind) || !isTargeted(config, info, this.base.outputHead)) continue;
      const settings = method.settings(config, info);
      check(settings.r > 0, 'LK_CONFIG_INVALID', `${source}: rank must be > 0 for ${info.path}, got ${settings.r}`);
      const specs = method.params(info, settings, config);
      const values = await method.init({ layer: info, settings, config, rng: new Rng(seedFrom(seed, info.path)) });
      adapter.layers.set(m.path, { info, module: m, settings, specs, values });
    }
    if (adapter.layers.size === 0)
      throw noTargetsError(
        config.target_modules,
        this.base.modules.map((m) => m.path),
        source,
      );
    for (const w of this.extraWeightNames(adapter))
      adapter.weights.set(w, Float32Array.from(await this.base.readWeight(w)));
    this.adapters.set(name, adapter);
    this.version++;
    this.active = [...this.active, name];
    return adapter;
  }

  private layerInfo(m: Exclude<ModuleInfo, Conv2dInfo>, config: Targeting): LayerInfo {
    const linear = m.kind !== 'embedding';
    return {
      path: m.path,
      kind: linear ? 'linear' : 'embedding',
      inFeatures: linear ? m.inFeatures : m.numEmbeddings,
      outFeatures: linear ? m.outFeatures : m.dim,
      fanInFanOut: m.kind === 'conv1d',
      layerIndex: layerIndexOf(m.path, config.layers_pattern),
      readWeight: () => this.base.readWeight(m.weightName),
    };
  }

  /** modules_to_save weights and trained biases (bias "all" / "lora_only"). */
  private extraWeightNames(a: Adapter): string[] {
    const names: string[] = [];
    const save = a.config.modules_to_save ?? [];
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
    for (const n of names)
      check(
        this.adapters.has(n),
        'LK_INVALID_ARGUMENT',
        `no adapter named "${n}"; adapters: ${[...this.adapters.keys()].join(', ') || '(none)'}`,
      );
    this.active = names;
  }
  get activeAdapters(): readonly string[] {
    return this.active;
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
  }

  /** Host values of the adapter's trainable tensors, by graph-input name (feed these to a train step). */
  trainableValues(name: string): Map<string, Float32Array> {
    const a = this.get(name);
    const out = new Map<string, Float32Array>();
    for (const [path, l] of a.layers)
      for (const s of l.specs) if (s.trainable) out.set(paramKey(name, path, s.name), l.values[s.name]);
    for (const [w, v] of a.weights) out.set(w, v);
    return out;
  }

  /** Takes trained values back (by graph-input name, as from trainableValues). */
  setValues(name: string, values: ReadonlyMap<string, Float32Array> | Record<string, Float32Array>): void {
    const a = this.get(name);
    this.version++;
    const get = (k: string) => (values instanceof Map ? values.get(k) : (values as Record<string, Float32Array>)[k]);
    for (const [path, l] of a.layers) {
      for (const s of l.specs) {
        const v = get(paramKey(name, path, s.name));
        if (v) {
          check(
            v.length === l.values[s.name].length,
            'LK_SHAPE_MISMATCH',
            `${paramKey(name, path, s.name)}: ${v.length} values, expected ${l.values[s.name].length}`,
          );
          l.values[s.name] = v;
        }
      }
    }
    for (const w of a.weights.keys()) {
      const v = get(w);
      if (v) a.weights.set(w, v);
    }
  }

  /** HF weight names that train with adapter `name` (make them WeightSource trainable inputs). */
  trainableWeights(name: string): string[] {
    return [...this.get(name).weights.keys()];
  }

  /** In-memory weights a graph must use: merged weights, and active adapters' saved modules (not when training them).
   * */
  weightOverrides(train?: string): Map<string, Float32Array> {
    const out = new Map(this.mergedWeights);
    if (this.enabled)
      for (const n of this.active) if (n !== train) for (const [w, v] of this.get(n).weights) out.set(w, v);
    return out;
  }

  /** The hooks that apply the active, unmerged adapters in a model graph. */
  hooks(opts: HookOptions = {}): ModuleHooks {
    if (opts.train)
      check(this.adapters.has(opts.train), 'LK_INVALID_ARGUMENT', `no adapter named "${opts.train}" to train`);
    const made = new Map<string, Tensor>(); // one graph tensor per adapter tensor, however often a module is called
    const apply = (m: { path: string; weight: Tensor; bias: Tensor | null }, x: Tensor, y: Tensor): Tensor => {
      if (!this.enabled) return y;
      for (const name of this.active) {
        const a = this.get(name);
        const l = a.layers.get(m.path);
        if (!l || this.mergedNames.includes(name)) continue;
        const g = x.graph;
        const p: Record<string, Tensor> = {};
        for (const s of l.specs) {
          const key = paramKey(name, m.path, s.name);
          let t = made.get(key);
          if (!t) {
            t =
              name === opts.train && s.trainable
                ? g.input(key, 'f32', s.shape)
                : g.initializer(key, 'f32', s.shape, l.values[s.name]);
            made.set(key, t);
          }
          p[s.name] = t.cast(y.dtype); // adapters compute in the model's dtype (f64 in gradient checks)
        }
        const seed = name === opts.train ? opts.dropoutSeed : undefined;
        const drop = (t: Tensor) =>
          seed && l.settings.dropout > 0 ? dropoutFn(t, l.settings.dropout, seed.add(seedFrom(0, m.path) % 997)) : t;
        y = a.method.forward({
          layer: l.info,
          settings: l.settings,
          config: a.config,
          x,
          y,
          weight: m.weight,
          bias: m.bias,
          p,
          dropout: drop,
        });
      }
      return y;
    };
    return {
      linear: (m: LinearModule, x) => apply(m, x, m.base(x)),
      embedding: (m: EmbeddingModule, ids) => apply({ path: m.path, weight: m.weight, bias: null }, ids, m.base(ids)),
    };
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

  /** Merges adapters (default: the active ones) into the base weights; the non-finite check runs once, here. */
  async merge(names: string[] = this.active): Promise<void> {
    for (const name of names) {
      if (this.mergedNames.includes(name)) continue;
      const a = this.get(name);
      for (const [path, l] of a.layers) {
        const m = a.method;
        if (!m.merge && !m.delta)
          throw new LorakitError('LK_UNSUPPORTED', `adapter "${name}" (${m.name}) cannot be merged`);
        const w0 = this.mergedWeights.get(l.module.weightName) ?? (await this.base.readWeight(l.module.weightName));
        const w = m.merge
          ? m.merge(l.info, l.settings, a.config, l.values, w0)
          : addInto(w0, m.delta!(l.info, l.settings, a.config, l.values));
        if (!w.every(Number.isFinite))
          throw new LorakitError(
            'LK_INVALID_ARGUMENT',
            `merging adapter "${name}" into ${path} gives non-finite weights; the adapter is broken`,
          );
        this.mergedWeights.set(l.module.weightName, w);
      }
      for (const [w, v] of a.weights) this.mergedWeights.set(w, v);
      this.mergedNames.push(name);
    }
  }

  /** Restores the base weights exactly (the merged copies are dropped; W0 is read from its file again). */
  unmerge(): void {
    this.mergedWeights.clear();
    this.mergedNames = [];
  }
  get merged(): readonly string[] {
    return this.mergedNames;
  }

  get(name: string): Adapter {
    const a = this.adapters.get(name);
    if (!a)
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `no adapter named "${name}"; adapters: ${[...this.adapters.keys()].join(', ') || '(none)'}`,
      );
    return a;
  }
}

function addInto(w0: Float32Array, d: Float32Array): Float32Array {
  const out = new Float32Array(w0.length);
  for (let i = 0; i < out.length; i++) out[i] = w0[i] + d[i];
  return out;
}
