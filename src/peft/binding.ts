/**
 * Adapters bound into one graph. The binding's module hooks apply the active adapters to every Linear, Conv1D,
 * Conv2d and Embedding the model calls, making each adapter tensor once per graph: the trained adapter's trainable
 * tensors and step inputs become graph inputs, everything else constants. As it makes them it records typed
 * handles — a tensor with its role and layer, a step input with the host function that computes it, a layer's
 * update rule, a loss term — so the trainer groups, feeds and updates tensors without reading their names.
 * Not here: adapter state (model.ts), the methods (methods/), the train step (optim/, train/).
 */
import { type Graph, type Tensor, dropout as dropoutFn } from '../graph/index.ts';
import type { CustomUpdate } from '../optim/index.ts';
import { seedFrom } from '../linalg/index.ts';
import {
  type Conv2dModule,
  conv2dForward,
  conv2dWeightShape,
  type EmbeddingModule,
  type LinearModule,
  linearForward,
  type ModuleHooks,
  type ModuleInfo,
} from '../nn/module.ts';
import type { LossTermContext, StepInputSpec, TensorRole } from './method.ts';
import { type Adapter, type AdapterLayer, moduleKey, paramKey, ruleStateKey, sharedKey, stepKey } from './model.ts';

/** Options of PeftModel.bind. */
export interface BindOptions {
  /** The adapter whose trainable tensors become graph inputs (training); every other adapter is constants. */
  train?: string;
  /** A scalar f32 graph input that seeds dropout masks; without it, dropout is off (inference). */
  dropoutSeed?: Tensor;
  /** Whether the trained adapter's step inputs are graph inputs (default true); false bakes their `infer` values. */
  feedStepInputs?: boolean;
  /** The dtype of the trained tensors' graph inputs (default f32; gradient checks feed f64). */
  paramDtype?: 'f32' | 'f64';
}

/** A trainable graph input, typed: the trainer groups by `role` and never parses `tensor.name`. */
export interface TrainableHandle {
  tensor: Tensor;
  adapter: string;
  role: TensorRole;
  /** The HF module path of its layer, or null for a model-level tensor. */
  layer: string | null;
}

/** A layer whose trainable tensors an update rule updates instead of the optimizer: the train step's CustomUpdate. */
export type UpdateRuleHandle = CustomUpdate;

/** A buffer of the trained adapter: its graph input and the value the forward pass set for the next step. */
export interface BufferHandle {
  input: Tensor;
  next: Tensor;
}

/** A loss term of the trained adapter, ready for the task's loss builder. */
export interface LossTermHandle {
  name: string;
  build(ctx: Omit<LossTermContext<unknown>, 'config'>): Tensor;
}

export class AdapterBinding {
  /** The hooks every model graph calls for its modules. */
  readonly hooks: ModuleHooks;
  private readonly made = new Map<string, Tensor>();
  private readonly trained: TrainableHandle[] = [];
  private readonly buffers = new Map<string, BufferHandle>();
  /** Trained layers the graph called, in call order (their update rules). */
  private readonly calledLayers: string[] = [];
  /**
   * The frozen weight tensor of each called trained layer, as the graph used it (update rules may read it), and
   * its graph. A thunk: reading a quantized layer's weight makes its float W̃ (a dequantized copy of every frozen
   * matrix, 1–2 s and 100+ MB of JavaScript on GPT-2), which only the rules that read W may pay for.
   */
  private readonly frozen = new Map<string, { graph: Graph; weight: () => Tensor }>();

  constructor(
    private readonly adapters: readonly Adapter[],
    private readonly opts: BindOptions,
  ) {
    const apply = (m: { path: string; weight: Tensor; bias: Tensor | null }, x: Tensor, y: Tensor): Tensor => {
      for (const a of this.adapters) y = this.applyOne(a, m, x, y);
      return y;
    };
    // a module an adapter saves (modules_to_save) computes with the adapter's copy instead of the base weights
    this.hooks = {
      linear: (m: LinearModule, x) => {
        const c = this.savedCopy(m.path, x);
        const base = c ? linearForward(x, c.weight, c.bias, m.inFeatures, m.outFeatures, m.fanInFanOut) : m.base(x);
        return apply(c ? { ...m, ...c } : m, x, base);
      },
      conv2d: (m: Conv2dModule, x) => {
        const c = this.savedCopy(m.path, x);
        return apply(c ? { ...m, ...c } : m, x, c ? conv2dForward(x, c.weight, c.bias, m) : m.base(x));
      },
      adapts: (path) => this.adapters.some((a) => a.layers.has(path) || a.modules.has(path)),
      embedding: (m: EmbeddingModule, ids) => {
        const c = this.savedCopy(m.path, m.weight);
        const weight = c ? c.weight : m.weight;
        return apply({ path: m.path, weight, bias: null }, ids, weight.gather(ids)); // [..., dim]
      },
    };
  }

  private applyOne(a: Adapter, m: { path: string; weight: Tensor; bias: Tensor | null }, x: Tensor, y: Tensor) {
    const l = a.layers.get(m.path);
    if (!l) return y;
    const training = a.name === this.opts.train;
    if (training && !this.calledLayers.includes(m.path)) {
      this.calledLayers.push(m.path);
      this.frozen.set(m.path, { graph: x.graph, weight: () => m.weight });
    }
    const g = x.graph;
    const cast = (t: Tensor) => (t.dtype === 'f32' || t.dtype === 'f64' ? t.cast(y.dtype) : t); // the model's dtype
    const p: Record<string, Tensor> = {};
    for (const s of l.specs)
      p[s.name] = cast(this.tensor(g, a, paramKey(a.name, m.path, s.name), s, l.values[s.name], m.path));
    const shared: Record<string, Tensor> = {};
    for (const s of a.shared.specs)
      shared[s.name] = cast(this.tensor(g, a, sharedKey(a.name, s.name), s, a.shared.values[s.name], null));
    const inputs: Record<string, Tensor> = {};
    for (const s of a.stepInputs)
      if (s.layer === null || s.layer === m.path) inputs[s.name] = cast(this.stepInput(g, a, s));
    const seed = training ? this.opts.dropoutSeed : undefined;
    const drop = (t: Tensor, rate: number) =>
      seed && rate > 0 ? dropoutFn(t, rate, seed.add(seedFrom(0, m.path) % 997)) : t;
    const ctx = {
      layer: l.info,
      settings: l.settings,
      config: a.config,
      x,
      y,
      // read only by methods that need W (DoRA): a quantized base makes its float W̃ only then
      get weight() {
        return m.weight;
      },
      bias: m.bias,
      p,
      shared,
      inputs,
      dropout: drop,
      setState: (name: string, next: Tensor) => this.setState(a, l, m.path, name, next),
    };
    return a.method.forward(ctx);
  }

  /** The copy of the module at `path` the last applied adapter saving it holds, in `like`'s dtype, or null. */
  private savedCopy(path: string, like: Tensor): { weight: Tensor; bias: Tensor | null } | null {
    const a = [...this.adapters].reverse().find((x) => x.modules.has(path));
    if (!a) return null;
    const sm = a.modules.get(path)!;
    const g = like.graph;
    const dtype = like.dtype === 'f64' ? 'f64' : 'f32';
    const make = (param: 'weight' | 'bias', v: Float32Array, shape: number[]) => {
      const spec = { shape, trainable: true, role: param === 'weight' ? ('module' as const) : ('bias' as const) };
      return this.tensor(g, a, moduleKey(a.name, sm.owner, param), spec, v, sm.owner).cast(dtype);
    };
    const bias = sm.bias ? make('bias', sm.bias, [sm.bias.length]) : null;
    return { weight: make('weight', sm.weight, weightShapeOf(sm.module)), bias };
  }

  /** Records the next value of a 'state' tensor (a buffer) when it is a graph input here; otherwise it stays. */
  private setState(a: Adapter, l: AdapterLayer, path: string, name: string, next: Tensor) {
    const key = paramKey(a.name, path, name);
    const spec = l.specs.find((s) => s.name === name);
    const input = this.made.get(key);
    if (!input || spec?.role !== 'state' || spec.trainable) {
      throw new Error(`internal: ${a.method.name} set ${name} of ${path}, which is not one of its state tensors`);
    }
    if (input.kind === 'input') this.buffers.set(key, { input, next: next.detach().cast('f32') });
  }

  /** The graph tensor of one adapter tensor, made once per graph. */
  private tensor(
    g: Graph,
    a: Adapter,
    key: string,
    spec: { shape: number[]; trainable: boolean; role: TensorRole },
    value: Float32Array,
    layer: string | null,
  ): Tensor {
    let t = this.made.get(key);
    if (t) return t;
    const training = a.name === this.opts.train;
    if (training && spec.trainable) {
      t = g.input(key, this.opts.paramDtype ?? 'f32', spec.shape);
      this.trained.push({ tensor: t, adapter: a.name, role: spec.role, layer });
    } else if (training && spec.role === 'state') {
      t = g.input(key, 'f32', spec.shape); // a buffer: fed its current value, its next value set by the forward pass
    } else t = g.initializer(key, 'f32', spec.shape, value);
    this.made.set(key, t);
    return t;
  }

  /** A per-step input: a graph input for the trained adapter (PeftModel.stepInputValues feeds it), else constant. */
  private stepInput(g: Graph, a: Adapter, s: StepInputSpec<any>): Tensor {
    const key = stepKey(a.name, s);
    let t = this.made.get(key);
    if (t) return t;
    const fed = a.name === this.opts.train && (this.opts.feedStepInputs ?? true);
    t = fed ? g.input(key, s.dtype, s.shape) : g.initializer(key, s.dtype, s.shape, s.infer(a.config));
    this.made.set(key, t);
    return t;
  }

  private trainedAdapter(): Adapter | undefined {
    return this.adapters.find((a) => a.name === this.opts.train);
  }

  /** The trained adapter's trainable graph inputs made so far, in creation order. */
  trainables(): TrainableHandle[] {
    return [...this.trained];
  }

  /** The trained adapter's per-layer update rules, for the layers the graph called. */
  updateRules(): UpdateRuleHandle[] {
    const a = this.trainedAdapter();
    const rule = a?.method.update;
    if (!a || !rule) return [];
    return this.calledLayers.map((path) => {
      const l = a.layers.get(path)!;
      const names = l.specs.filter((s) => s.trainable).map((s) => s.name);
      const params = names.map((n) => this.made.get(paramKey(a.name, path, n))!);
      const slots = rule.state(l.info, l.settings, a.config);
      const specs = a.stepInputs.filter((s) => s.layer === null || s.layer === path);
      const frozen = this.frozen.get(path);
      return {
        name: `${path}#${a.name}`,
        params,
        state: slots.map((s) => ({ name: ruleStateKey(a.name, path, s.name), shape: s.shape })),
        inputs: specs.map((s) => ({ name: stepKey(a.name, s), dtype: s.dtype, shape: s.shape })),
        apply: (c) => {
          const by = <T>(keys: string[], ts: T[]) => Object.fromEntries(keys.map((k, i) => [k, ts[i]]));
          const out = rule.apply({
            layer: l.info,
            settings: l.settings,
            config: a.config,
            p: by(names, c.params),
            g: by(names, c.grads),
            state: by(
              slots.map((s) => s.name),
              c.state,
            ),
            inputs: by(
              specs.map((s) => s.name),
              c.inputs,
            ),
            lr: c.lr,
            step: c.step,
            weightDecay: c.weightDecay,
            // the forward graph's weight; the update graph of accumulated steps is another graph
            get weight() {
              return frozen && c.lr.graph === frozen.graph ? frozen.weight() : null;
            },
          });
          return { params: names.map((n) => out.p[n]), state: slots.map((s) => out.state[s.name]) };
        },
      };
    });
  }

  /** The trained adapter's buffers the forward pass updated, with their next values. */
  bufferUpdates(): BufferHandle[] {
    return [...this.buffers.values()];
  }

  /** The trained adapter's loss terms. */
  lossTerms(): LossTermHandle[] {
    const a = this.trainedAdapter();
    if (!a) return [];
    return (a.method.lossTerms?.(a.config) ?? []).map((t) => ({
      name: t.name,
      build: (ctx) => t.build({ ...ctx, config: a.config }),
    }));
  }
}

/** The stored shape of a module's weight. */
export function weightShapeOf(m: ModuleInfo): number[] {
  if (m.kind === 'embedding') return [m.numEmbeddings, m.dim];
  if (m.kind === 'conv2d') return conv2dWeightShape(m);
  return m.kind === 'conv1d' ? [m.inFeatures, m.outFeatures] : [m.outFeatures, m.inFeatures];
}
