/**
 * Modules that carry Hugging Face parameter names, and the one injection point for adapters.
 * A model never multiplies by a weight itself: every Linear, GPT-2 Conv1D, Embedding and Conv2d call goes through
 * `ctx.linear(path, x)` / `ctx.embedding(path, ids)` / `ctx.conv2d(path, x)`, which hand the module to `hooks` when
 * present (LoRA, DoRA and every other method wrap the frozen `base` there) and otherwise return `m.base(x)`.
 * Not here: the models (models/), the adapter methods (peft/), where weights come from (weights.ts).
 */
import { LorakitError, internal } from '../errors.ts';
import { type Graph, type Tensor, fmtShape, memoTable } from '../graph/index.ts';
import type { ComputeDType, WeightSource } from './weights.ts';
import { type QuantKernels, type QuantizedTensors, quantizedTensors } from './quant-linear.ts';
import type { QuantMode, QuantizedWeight } from './quantize.ts';

/** The sizes and weight layout of a Linear or Conv1D. */
type LinearShape = Pick<LinearModule, 'inFeatures' | 'outFeatures' | 'fanInFanOut'>;

/** A Linear (or GPT-2 Conv1D) layer as the frozen base model has it. */
export interface LinearModule {
  /** HF module path, e.g. model.layers.0.self_attn.q_proj. */
  path: string;
  inFeatures: number;
  outFeatures: number;
  /** The weight as stored: [out, in], or [in, out] for GPT-2 Conv1D (fanInFanOut). */
  weight: Tensor;
  bias: Tensor | null;
  /** Set when the frozen weight is quantized (`weight` is then W̃ as a float tensor, made only if read). */
  quantized?: QuantMode;
  /** True for GPT-2 Conv1D, whose weight is stored [in, out] (PEFT's fan_in_fan_out). */
  fanInFanOut: boolean;
  /** The frozen layer's output x·Wᵀ + b, [..., in] → [..., out]. */
  base(x: Tensor): Tensor;
  /**
   * dY·W, [..., out] → [..., in]: the input gradient `base`'s rules give (a quantized layer's backward copy), built
   * without differentiating `base`, for a caller that has dY in hand (the fused head, train/loss.ts). `x`, the
   * tensor `base` was applied to, lets a quantized layer take the columns its forward multiplied in float the same
   * way (int8-rows' outliers); without it they go through the backward copy too.
   */
  inputGrad(dy: Tensor, x?: Tensor): Tensor;
  /** Rows `ids` [n] of the matrix inputGrad multiplies by, [n, in]: inputGrad of one-hot rows, without them. */
  inputRows(ids: Tensor): Tensor;
}

/** An Embedding layer: rows of `weight` [numEmbeddings, dim] picked by integer ids. */
export interface EmbeddingModule {
  path: string;
  numEmbeddings: number;
  dim: number;
  weight: Tensor;
  /** The frozen lookup, ids [...] → [..., dim]. */
  base(ids: Tensor): Tensor;
}

/** A torch.nn.Conv2d's sizes and settings (zero padding [ph, pw], the same on both sides of an axis). */
export interface Conv2dShape {
  path: string;
  inChannels: number;
  outChannels: number;
  kernel: [number, number];
  stride: [number, number];
  padding: [number, number];
  dilation: [number, number];
  groups: number;
}

/** A torch.nn.Conv2d as the frozen base model has it. */
export interface Conv2dModule extends Conv2dShape {
  /** [out, in/groups, kh, kw], as torch stores it. */
  weight: Tensor;
  bias: Tensor | null;
  /** The frozen layer's output, [N, in, H, W] → [N, out, H', W']. */
  base(x: Tensor): Tensor;
}

/** The adapter framework's hooks; each returns the module's (adapted) output. */
export interface ModuleHooks {
  linear?(m: LinearModule, x: Tensor): Tensor;
  embedding?(m: EmbeddingModule, ids: Tensor): Tensor;
  conv2d?(m: Conv2dModule, x: Tensor): Tensor;
  /**
   * Whether the hooks change or record anything at the module `path` (false: they return its base output and touch
   * nothing). Absent: any module may be adapted. Lets a caller build a frozen module its own way (the fused head).
   */
  adapts?(path: string): boolean;
}

/** A Conv2d entry of a model's module list. */
export interface Conv2dInfo extends Conv2dShape {
  kind: 'conv2d';
  weightName: string;
  biasName: string | null;
}

/** A Linear/Conv1D/Embedding/Conv2d of a model, as `modules()` lists it (for `lorakit info` and target matching). */
export type ModuleInfo =
  | {
      kind: 'linear' | 'conv1d';
      path: string;
      inFeatures: number;
      outFeatures: number;
      weightName: string;
      biasName: string | null;
    }
  | { kind: 'embedding'; path: string; numEmbeddings: number; dim: number; weightName: string }
  | Conv2dInfo;

/** The stored weight shape of a Conv2d, [out, in/groups, kh, kw]. */
export function conv2dWeightShape(m: Conv2dInfo): number[] {
  if (m.inChannels % m.groups !== 0 || m.outChannels % m.groups !== 0) {
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `Conv2d ${m.path}: groups ${m.groups} must divide in_channels ${m.inChannels} and out_channels ${m.outChannels}`,
    );
  }
  return [m.outChannels, m.inChannels / m.groups, ...m.kernel];
}

/** What model code builds with: the graph, its weights, the hooks, and the config of the model. */
export interface ModelContext<C = unknown> {
  readonly graph: Graph;
  readonly weights: WeightSource;
  readonly hooks: ModuleHooks;
  readonly config: C;
  /** Compute dtype of activations (f32; f64 in gradient checks). */
  readonly dtype: ComputeDType;
  /** Output of the Linear/Conv1D at `path`, through hooks.linear when set. */
  linear(path: string, x: Tensor): Tensor;
  /** Whether the Linear at `path` computes more than its frozen product: a hook adapts it, or its weight trains. */
  adapted(path: string): boolean;
  /** Output of the Embedding at `path`, through hooks.embedding when set. */
  embedding(path: string, ids: Tensor): Tensor;
  /** Output of the Conv2d at `path` for x [N, in, H, W], through hooks.conv2d when set. */
  conv2d(path: string, x: Tensor): Tensor;
  /** The module at `path`, built once (its weights become graph tensors on first use). */
  linearModule(path: string): LinearModule;
  embeddingModule(path: string): EmbeddingModule;
  conv2dModule(path: string): Conv2dModule;
  /** A non-module parameter (norm weights and biases) by HF name. */
  param(name: string, shape: readonly number[]): Tensor;
}

/**
 * x·Wᵀ + b for W [out, in] as one Gemm(transB=1) over the flattened rows; Conv1D (W [in, out]) is Gemm without
 * the transpose. Measured on 512×768×768 f32 (2 threads): Gemm median 4.5 ms vs MatMul(x, Wᵀ)+Add 6.9 ms, and
 * Gemm reads the memory-mapped weight as stored, where Wᵀ would make ORT fold a transposed copy of every weight.
 */
export function linearForward(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  inFeatures: number,
  outFeatures: number,
  fanInFanOut: boolean,
): Tensor {
  const last = x.shape[x.rank - 1];
  if (typeof last === 'number' && last !== inFeatures) {
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `linear: input ${fmtShape(x.shape)} does not end in in_features ${inFeatures} (weight ${fmtShape(weight.shape)})`,
    );
  }
  return overRows(x, inFeatures, outFeatures, (rows) => rows.gemm(weight, bias, { transB: fanInFanOut ? 0 : 1 }));
}

/** Rows `ids` [n] of a weight [out, in] ([in, out] for a Conv1D) as [n, in]: the input gradient of one-hot rows. */
const weightRows = (weight: Tensor, ids: Tensor, fanInFanOut: boolean): Tensor =>
  fanInFanOut ? weight.gather(ids, 1).transpose([1, 0]) : weight.gather(ids, 0);

/** x as rows [N, in], one tensor per x in a graph, so products that read one input see one tensor (q, k, v). */
const ROWS = memoTable<Tensor, Tensor>('overRows: x reshaped to [N, in]');

/** x [..., in] as rows [N, in]: one reshape per tensor, so products reading x find the same rows tensor. */
const rowsOf = (x: Tensor, inFeatures: number): Tensor =>
  x.rank === 2 ? x : x.graph.memo(ROWS, x, () => x.reshape([-1, inFeatures]));

/** `product` applied to x's rows: [..., in] → [N, in] → [N, out] → [..., out] (symbolic leading dims kept). */
export function overRows(x: Tensor, inFeatures: number, outFeatures: number, product: (rows: Tensor) => Tensor) {
  const rows = rowsOf(x, inFeatures); // [N, in]
  const y = product(rows); // [N, out]
  if (x.rank === 2) return y;
  const lead = x.shape.slice(0, -1);
  if (lead.every((d) => typeof d === 'number')) return y.reshape([...(lead as number[]), outFeatures]);
  const g = x.graph;
  const target = g.concat([x.shapeOf().slice([0], [x.rank - 1]), g.constInts([outFeatures])], 0);
  return y.reshape(target, [...lead, outFeatures]); // [..., out]
}

/**
 * The frozen layer with a quantized weight: x·W̃ᵀ (+ b) through the integer kernel, or in float64 by W̃ itself
 * (gradient checks; quant-linear.ts says why).
 */
function quantizedForward(x: Tensor, q: QuantizedTensors, bias: Tensor | null, m: LinearShape): Tensor {
  const { inFeatures: inF, outFeatures: outF } = m;
  const last = x.shape[x.rank - 1];
  if (typeof last === 'number' && last !== inF) {
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `linear: input ${fmtShape(x.shape)} does not end in in_features ${inF} (a quantized [${outF}, ${inF}] weight)`,
    );
  }
  return overRows(x, inF, outF, (rows) => {
    if (rows.dtype === 'f64') return rows.gemm(q.dequantized('f64'), bias, { transB: m.fanInFanOut ? 0 : 1 });
    const y = q.product(rows); // [N, out]
    return bias ? y.add(bias) : y;
  });
}

/** The frozen Conv2d as one ONNX Conv: x [N, in, H, W] → [N, out, H', W'], zero padding [ph, pw] on both sides. */
export function conv2dForward(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  m: Pick<Conv2dInfo, 'inChannels' | 'stride' | 'padding' | 'dilation' | 'groups'>,
): Tensor {
  const c = x.shape[1];
  if (x.rank !== 4 || (typeof c === 'number' && c !== m.inChannels)) {
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `conv2d: input ${fmtShape(x.shape)} is not [N, ${m.inChannels}, H, W] (weight ${fmtShape(weight.shape)})`,
    );
  }
  return x.conv2d(weight, bias, { stride: m.stride, padding: m.padding, dilation: m.dilation, groups: m.groups });
}

export interface ContextOptions<C> {
  graph: Graph;
  weights: WeightSource;
  modules: readonly ModuleInfo[];
  config: C;
  hooks?: ModuleHooks;
  /** Quantized frozen weights by HF weight name: those Linears multiply through integer kernels. */
  quantized?: ReadonlyMap<string, QuantizedWeight>;
  /** The integer kernels their products use (default float inputs, u8 codes). */
  quantKernels?: QuantKernels;
  /** The quantized output head's HF weight name: its input gradient runs over the vocabulary (VocabBackward). */
  vocabHead?: string;
}

/** Builds a ModelContext whose modules are the given list (weights are fetched lazily, once). */
export function createContext<C>(opts: ContextOptions<C>): ModelContext<C> {
  const { graph, weights, config } = opts;
  const hooks = opts.hooks ?? {};
  const specs = new Map(opts.modules.map((m) => [m.path, m]));
  const linears = new Map<string, LinearModule>();
  const embeddings = new Map<string, EmbeddingModule>();
  const convs = new Map<string, Conv2dModule>();
  const quantTensors = new Map<string, QuantizedTensors>(); // by weight name: tied layers share one copy
  const quantizedModule = (
    s: Extract<ModuleInfo, { kind: 'linear' | 'conv1d' }>,
    q: QuantizedWeight,
    bias: Tensor | null,
    fanInFanOut: boolean,
  ): LinearModule => {
    const { path, inFeatures, outFeatures } = s;
    if (q.out !== outFeatures || q.in !== inFeatures)
      throw new LorakitError(
        'LK_SHAPE_MISMATCH',
        `quantized weight '${s.weightName}' is [${q.out}, ${q.in}], but ${path} is [${outFeatures}, ${inFeatures}]`,
      );
    let t = quantTensors.get(s.weightName);
    if (!t) {
      // a head tied to an embedding: that float weight is in the graph anyway, and gives the input gradient where
      // the kernels do not take it from the codes (quantizedTensors)
      const tied = !fanInFanOut && opts.modules.some((o) => o.kind === 'embedding' && o.weightName === s.weightName);
      const float = tied ? weights.get(s.weightName, [outFeatures, inFeatures]) : undefined;
      const over = { float, vocab: tied || s.weightName === opts.vocabHead };
      t = quantizedTensors(graph, weights.namePrefix + s.weightName, q, fanInFanOut, opts.quantKernels, over);
      quantTensors.set(s.weightName, t);
    }
    const qt = t;
    const shape = { inFeatures, outFeatures, fanInFanOut };
    return {
      path,
      inFeatures,
      outFeatures,
      // W̃ only where a method reads it (DoRA's norms); an unread initializer is not written into the model
      get weight() {
        return qt.dequantized(weights.dtype);
      },
      bias,
      fanInFanOut,
      quantized: q.kind === 'q4' ? 'q4' : 'int8',
      base: (x) => quantizedForward(x, qt, bias, shape),
      inputGrad: (dy, x) =>
        overRows(dy, outFeatures, inFeatures, (rows) =>
          rows.dtype === 'f64'
            ? rows.gemm(qt.dequantized('f64'), null, { transB: fanInFanOut ? 1 : 0 })
            : qt.inputGrad(rows, x && rowsOf(x, inFeatures)),
        ),
      inputRows: (ids) =>
        weights.dtype === 'f64' ? weightRows(qt.dequantized('f64'), ids, fanInFanOut) : qt.inputRows(ids),
    };
  };
  // Which listed kinds each accessor serves: ctx.linear covers GPT-2's Conv1D too.
  const serves = { linear: ['linear', 'conv1d'], embedding: ['embedding'], conv2d: ['conv2d'] } as const;
  type Served<K extends keyof typeof serves> = Extract<ModuleInfo, { kind: (typeof serves)[K][number] }>;
  const spec = <K extends keyof typeof serves>(path: string, kind: K): Served<K> => {
    const s = specs.get(path);
    if (!s || !(serves[kind] as readonly string[]).includes(s.kind))
      internal(`model code asked for ${kind} module '${path}', which the module list does not have as one`);
    return s as Served<K>;
  };
  const ctx: ModelContext<C> = {
    graph,
    weights,
    hooks,
    config,
    dtype: weights.dtype,
    linearModule(path) {
      let m = linears.get(path);
      if (m) return m;
      const s = spec(path, 'linear');
      const fanInFanOut = s.kind === 'conv1d';
      const { inFeatures, outFeatures } = s;
      const q = opts.quantized?.get(s.weightName);
      const biasOf = () => (s.biasName ? weights.get(s.biasName, [outFeatures]) : null);
      if (q && !weights.isTrainable(s.weightName) && !weights.isOverridden(s.weightName)) {
        m = quantizedModule(s, q, biasOf(), fanInFanOut);
      } else {
        // the weight before the bias: a head missing from the file is reported by its weight's name
        const weight = weights.get(s.weightName, fanInFanOut ? [inFeatures, outFeatures] : [outFeatures, inFeatures]);
        const bias = biasOf();
        const base = (x: Tensor) => linearForward(x, weight, bias, inFeatures, outFeatures, fanInFanOut);
        const inputGrad = (dy: Tensor) =>
          overRows(dy, outFeatures, inFeatures, (rows) => rows.gemm(weight, null, { transB: fanInFanOut ? 1 : 0 }));
        const inputRows = (ids: Tensor) => weightRows(weight, ids, fanInFanOut);
        m = { path, inFeatures, outFeatures, weight, bias, fanInFanOut, base, inputGrad, inputRows };
      }
      linears.set(path, m);
      return m;
    },
    embeddingModule(path) {
      let m = embeddings.get(path);
      if (m) return m;
      const s = spec(path, 'embedding');
      const weight = weights.get(s.weightName, [s.numEmbeddings, s.dim]);
      m = { path, numEmbeddings: s.numEmbeddings, dim: s.dim, weight, base: (ids) => weight.gather(ids) }; // [..., dim]
      embeddings.set(path, m);
      return m;
    },
    conv2dModule(path) {
      let m = convs.get(path);
      if (m) return m;
      const s = spec(path, 'conv2d');
      const weight = weights.get(s.weightName, conv2dWeightShape(s)); // [out, in/groups, kh, kw]
      const bias = s.biasName ? weights.get(s.biasName, [s.outChannels]) : null;
      const { inChannels, outChannels, kernel, stride, padding, dilation, groups } = s;
      const base = (x: Tensor) => conv2dForward(x, weight, bias, s); // [N, out, H', W']
      m = { path, inChannels, outChannels, kernel, stride, padding, dilation, groups, weight, bias, base };
      convs.set(path, m);
      return m;
    },
    adapted(path) {
      const hooked = !!hooks.linear && (hooks.adapts?.(path) ?? true);
      return hooked || weights.isTrainable(spec(path, 'linear').weightName);
    },
    linear(path, x) {
      const m = ctx.linearModule(path);
      return graph.scope(path, () => (hooks.linear ? hooks.linear(m, x) : m.base(x)));
    },
    embedding(path, ids) {
      const m = ctx.embeddingModule(path);
      return graph.scope(path, () => (hooks.embedding ? hooks.embedding(m, ids) : m.base(ids)));
    },
    conv2d(path, x) {
      const m = ctx.conv2dModule(path);
      return graph.scope(path, () => (hooks.conv2d ? hooks.conv2d(m, x) : m.base(x)));
    },
    param: (name, shape) => weights.get(name, shape),
  };
  return ctx;
}
