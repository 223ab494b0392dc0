/**
 * The adapter-method interface. Every method (LoRA, DoRA, VeRA, ...; ../shared/spec/methods-*.md) is one object
 * implementing `AdapterMethod`, in one file under peft/methods/. Everything shared by all methods — target
 * matching, layers_to_transform, merge loops, the non-finite check, PEFT save/load prefixes — lives once in peft/.
 * docs/adapters.md checks this interface against DoRA, VeRA, LoRA-GA, LoRA-Pro, DyLoRA and FlyLoRA.
 */
import type { Tensor } from '../graph/index.ts';
import type { Rng } from '../linalg/index.ts';

export type LayerKind = 'linear' | 'embedding';

/** The base layer a method wraps, as the method sees it. Shapes follow PyTorch: Linear W is [out, in]. */
export interface LayerInfo {
  /** HF module path, e.g. `model.layers.0.self_attn.q_proj`. */
  path: string;
  kind: LayerKind;
  /** Linear: in/out features; Embedding: numEmbeddings/dim. */
  inFeatures: number;
  outFeatures: number;
  /** GPT-2 Conv1D stores W as [in, out]; adapters keep Linear orientation and transpose ΔW at merge. */
  fanInFanOut: boolean;
  /** Index of the transformer block the layer sits in, if any (for layers_to_transform). */
  layerIndex: number | null;
  /** The frozen base weight as stored (f32 on the host), for initialisers and merges that read W0. */
  readWeight(): Promise<Float32Array>;
}

/** One tensor a method adds to a wrapped layer. `name` is PEFT's key suffix (`lora_A.weight`). */
export interface ParamSpec {
  name: string;
  shape: number[];
  trainable: boolean;
}

/** Per-layer settings after rank_pattern / alpha_pattern are applied. */
export interface LayerSettings {
  r: number;
  alpha: number;
  /** The factor PEFT multiplies the adapter output by (alpha/r, alpha/√r with rsLoRA). */
  scaling: number;
  dropout: number;
}

export interface InitContext<C> {
  layer: LayerInfo;
  settings: LayerSettings;
  config: C;
  rng: Rng;
}

/** What forward() gets: the layer input, the frozen layer's output, and this adapter's tensors. */
export interface ForwardContext<C> {
  layer: LayerInfo;
  settings: LayerSettings;
  config: C;
  /** Layer input: [.., in] for Linear, integer ids for Embedding. */
  x: Tensor;
  /** Frozen base output (bias included). */
  y: Tensor;
  /** The frozen base weight and bias as graph tensors (DoRA needs W for its norm). */
  weight: Tensor;
  bias: Tensor | null;
  /** This adapter's tensors on this layer, by ParamSpec name. */
  p: Record<string, Tensor>;
  /** Dropout on the adapter path (identity at inference or when dropout is 0). */
  dropout(x: Tensor): Tensor;
}

/**
 * A method. Required: config, settings, params, init, forward. Optional: `delta` (mergeable methods) and `merge`
 * (non-additive merges, DoRA). The abilities later methods need — shared tensors (VeRA), per-step host inputs
 * (DyLoRA), forward-updated state (FlyLoRA), per-layer update rules (LoRA-Pro), calibration gradients and base
 * replacement (LoRA-GA, PiSSA), loss terms — are specified in docs/adapters.md and join this interface, once for
 * all methods, with the first method that uses each.
 */
export interface AdapterMethod<C = unknown> {
  /** Registry name, equal to the file name and (upper-cased) PEFT's peft_type. */
  name: string;
  peftType: string;
  /** Base layers the method can wrap. */
  layers: readonly LayerKind[];
  /** Validates and fills the config (PEFT field names and defaults); `source` names the file in errors. */
  parseConfig(json: unknown, source: string): C;
  /** Settings of one layer (rank/alpha patterns). */
  settings(config: C, layer: LayerInfo): LayerSettings;
  /** Tensors this method adds to one layer. */
  params(layer: LayerInfo, settings: LayerSettings, config: C): ParamSpec[];
  /** Initial values of those tensors (may read W0). */
  init(ctx: InitContext<C>): Promise<Record<string, Float32Array>>;
  /** The adapted layer output, as graph ops. */
  forward(ctx: ForwardContext<C>): Tensor;
  /** ΔW in the stored weight's layout (so W0 + ΔW is the merged weight), or undefined when not mergeable. */
  delta?(layer: LayerInfo, settings: LayerSettings, config: C, p: Record<string, Float32Array>): Float32Array;
  /** Merged weight when the merge is not W0 + ΔW. */
  merge?(
    layer: LayerInfo,
    settings: LayerSettings,
    config: C,
    p: Record<string, Float32Array>,
    w0: Float32Array,
  ): Float32Array;
}
