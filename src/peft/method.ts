/**
 * The adapter-method interface. Every method of the LoRA family (../shared/spec/methods-*.md) is one object
 * implementing `AdapterMethod` in one file under peft/methods/, and every variant that changes one aspect of a
 * method (DoRA's forward, PiSSA's initialisation, LoRA-Pro's update rule, a loss term) is one `MethodVariant`
 * there; peft/methods/index.ts lists them in order and peft/registry.ts composes them. Everything shared by all
 * methods — target matching, layers_to_transform, merge loops, the non-finite check, PEFT save/load prefixes,
 * dropout, graph inputs and the handles the trainer receives — lives once in peft/. docs/adapters.md shows which
 * method uses which ability.
 * Not here: how adapters are held and applied (model.ts), saved (format.ts), or trained (train/).
 */
import type { z } from 'zod';
import type { Tensor } from '../graph/index.ts';
import type { Rng } from '../linalg/index.ts';

/** The base layers an adapter can wrap. `conv1d` is GPT-2's Conv1D: a Linear whose weight is stored [in, out]. */
export type LayerKind = 'linear' | 'conv1d' | 'conv2d' | 'embedding';

/** Geometry of a 2-D convolution (PyTorch's Conv2d arguments; padding is symmetric per axis). */
export interface ConvGeometry {
  kernel: [number, number];
  stride: [number, number];
  padding: [number, number];
  dilation: [number, number];
  groups: number;
}

/**
 * The base layer a method wraps, as the method sees it. Sizes are PyTorch's: `inFeatures`/`outFeatures` are a
 * Linear's in/out features, a Conv2d's in/out channels, an Embedding's number of embeddings / embedding dim.
 */
export interface LayerInfo {
  /** HF module path, e.g. `model.layers.0.self_attn.q_proj`. */
  path: string;
  kind: LayerKind;
  inFeatures: number;
  outFeatures: number;
  /** Kernel, stride, padding, dilation and groups of a conv2d layer; null otherwise. */
  conv: ConvGeometry | null;
  /** Index of the transformer block the layer sits in, if any (for layers_to_transform). */
  layerIndex: number | null;
  /** The stored weight's shape: [out, in]; conv1d [in, out]; conv2d [out, in/groups, kh, kw]; embedding [num, dim]. */
  weightShape: number[];
  /**
   * The dtype the weight is stored in, as safetensors names it (F32, F16, BF16, F64; F32 for in-memory weights).
   * Graphs compute in f32 whatever it is; initialisers that follow PEFT's dtype rules read it.
   */
  weightDtype: string;
  /** The frozen base weight as stored (f32 on the host), for initialisers and merges that read W0. */
  readWeight(): Promise<Float32Array>;
}

/**
 * What a tensor is to its method. The trainer groups trainable tensors by role (LoRA+ puts `b` and every 1-D
 * tensor in its "B" group, as PEFT's create_loraplus_optimizer does) and never reads tensor names.
 */
export type TensorRole =
  /** A down-projection (LoRA's A). */
  | 'a'
  /** An up-projection (LoRA's B). */
  | 'b'
  /** A per-output magnitude (DoRA's m). */
  | 'magnitude'
  /** A per-layer scaling vector (VeRA's λ_b, λ_d). */
  | 'vector'
  /** A small square matrix between the factors (SLoRA's N, LoRA-XS's R). */
  | 'core'
  /** A frozen random projection (VeRA's shared A and B). */
  | 'projection'
  /** A trained copy of a whole base module's weight (modules_to_save). */
  | 'module'
  /** A trained bias: a base bias trained in place, or a saved module's copy of it (no weight decay, as in HF). */
  | 'bias'
  /** A frozen buffer the forward pass updates (FlyLoRA's load-balancing bias): not trained, kept across steps. */
  | 'state'
  /** A tensor that is neither (a method-specific parameter). */
  | 'other';

/** One tensor a method adds, to a layer or (as a shared tensor) to the whole model. */
export interface ParamSpec {
  /** PEFT's key suffix (`lora_A.weight`), or for a shared tensor PEFT's name under `base_model.` (`vera_A`). */
  name: string;
  shape: number[];
  /**
   * Trained (a graph input fed by the trainer) or frozen (a constant, saved with the adapter). A frozen tensor with
   * role 'state' is a buffer: a graph input in training graphs whose next value the forward sets (`setState`).
   */
  trainable: boolean;
  role: TensorRole;
  /**
   * false: left out of adapter files and not expected in them, because the initialiser regenerates it exactly (VeRA's
   * projections with save_projection=False, drawn from torch's stream as PEFT draws them). Default true.
   */
  saved?: boolean;
}

/** What an initialiser returns: the values of its tensors, and optionally a replacement for the frozen weight. */
export interface InitResult {
  values: Record<string, Float32Array>;
  /**
   * A new frozen base weight, in the stored layout (PiSSA, OLoRA and LoRA-GA move W0's principal part into the
   * adapter and freeze the residual). It replaces W0 in every graph — also with the adapter disabled or unmerged,
   * as in PEFT — and the adapter's initial values are kept so it can be saved as a plain LoRA of the untouched base.
   */
  base?: Float32Array;
}

/** Everything an initialiser may read. */
export interface InitContext<C, S> {
  layer: LayerInfo;
  settings: S;
  config: C;
  /** A generator seeded by the adapter seed and the layer path (each layer draws its own stream). */
  rng: Rng;
  /** The model-level tensors after their initialisation. */
  shared: Record<string, Float32Array>;
  /** The frozen weight this adapter sees (W0, or an earlier adapter's replacement), stored layout. */
  readBase(): Promise<Float32Array>;
  /** Mean gradient of the loss with respect to the frozen weight over the calibration batches (stored layout). */
  calibrationGrad?: Float32Array;
  /** This layer's values from the method's `jointInit` (drawn for all layers at once), when it has one. */
  joint?: Record<string, Float32Array>;
  /**
   * true when a saved adapter is being loaded (loadAdapter): every saved tensor is then read from the file right after
   * (a missing one is an error), so an initialiser that replaces no weight may skip its decomposition and return
   * placeholders of the right sizes (LoRA-XS's SVD, SALT's). A base-replacing initialiser must still compute the
   * weight it replaces (LoLDU's residual).
   */
  loading?: boolean;
}

/** What `initShared` gets: the targeted layers in model order. */
export interface SharedInitContext<C> {
  config: C;
  layers: readonly LayerInfo[];
  rng: Rng;
}

/** Element types a method may write to adapter files (safetensors' names). */
export type FileDType = 'F32' | 'I64' | 'I32' | 'I16' | 'U8';

/** The typed array that holds a file tensor's values when it is written. */
export type FileData = Float32Array | BigInt64Array | Int32Array | Int16Array | Uint8Array;

/**
 * How one layer's tensors are written to adapter files and read back, when that is not one F32 tensor per saved
 * ParamSpec: VB-LoRA's save_only_topk_weights keeps each logits tensor as its top-k indices and weights, RandLoRA
 * writes the per-layer copies of the shared bases PEFT expects, Uni-LoRA's index maps are int64 there. The listed
 * tensors (keys `<module path>.<name>`) replace the layer's saved ParamSpecs in files.
 */
export interface FileLayout<C, S> {
  tensors: { name: string; shape: number[]; dtype: FileDType }[];
  /** The file's tensors from the layer's values, each in the typed array of its dtype. */
  encode(v: LayerValues<C, S>): Record<string, FileData>;
  /**
   * The layer's values from the file's tensors (as read: float tensors and exact integers, in float64); the values
   * it leaves out keep what the initialiser gave them.
   */
  decode(file: Record<string, Float64Array>): Record<string, Float32Array>;
}

/** What forward() gets: the layer input, the frozen layer's output, and this adapter's tensors as graph tensors. */
export interface ForwardContext<C, S> {
  layer: LayerInfo;
  settings: S;
  config: C;
  /** Layer input: [.., in] for linear/conv1d, [N, C, H, W] for conv2d, integer ids for embedding. */
  x: Tensor;
  /** Frozen base output (bias included). */
  y: Tensor;
  /** The frozen base weight and bias as stored, as graph tensors (DoRA needs W for its norm). */
  weight: Tensor;
  bias: Tensor | null;
  /** This adapter's tensors on this layer, by ParamSpec name, in the model's compute dtype. */
  p: Record<string, Tensor>;
  /** The adapter's model-level tensors, by name. */
  shared: Record<string, Tensor>;
  /** The per-step inputs this adapter declared (model-level and this layer's), by StepInputSpec name. */
  inputs: Record<string, Tensor>;
  /** Dropout with rate `rate` on the adapter path (identity at inference or when the rate is 0). */
  dropout(x: Tensor, rate: number): Tensor;
  /**
   * Sets the value a 'state' tensor of this layer has after this step (computed from this forward pass, without
   * gradient). In training graphs the trainer feeds it back next step and saves it in checkpoints; elsewhere the
   * state stays as held.
   */
  setState(name: string, next: Tensor): void;
}

/** Host values of an adapted layer for merges and host-side hooks. */
export interface LayerValues<C, S> {
  layer: LayerInfo;
  settings: S;
  config: C;
  /** This layer's tensors by ParamSpec name. */
  p: Record<string, Float32Array>;
  /** Model-level tensors by name. */
  shared: Record<string, Float32Array>;
}

/** A value the host computes and feeds at every training step (a sampled rank, an r×r decomposition, ...). */
export interface StepInputSpec<C> {
  /** Unique among this adapter's inputs of the same layer (or of the model when `layer` is null). */
  name: string;
  /** The layer path the input belongs to, or null for one input shared by all layers. */
  layer: string | null;
  dtype: 'f32' | 'i64';
  shape: number[];
  /**
   * The value for one training step, from the run's generator (saved in checkpoints, so resumed runs draw the same)
   * and the current values; called once per optimizer step, and the same value feeds every micro-batch of it.
   */
  train(ctx: StepInputContext<C>): Float32Array | BigInt64Array;
  /** The value outside training (evaluation, generation, merges). */
  infer(config: C): Float32Array | BigInt64Array;
}

/** What a step input's `train` gets. */
export interface StepInputContext<C> {
  config: C;
  /** The optimizer step being taken, 1-based. */
  step: number;
  rng: Rng;
  /** Current values of the layer the input belongs to (null for model-level inputs). */
  values: Record<string, Float32Array> | null;
  /**
   * For model-level inputs: every adapted layer, in model order, with its current values and its update rule's state
   * after the previous step (LoRAPrune's masks couple the layers of a block); null for layer inputs.
   */
  layers?: ReadonlyMap<string, LayerStepView> | null;
}

/** One adapted layer as a model-level step input sees it. */
export interface LayerStepView {
  info: LayerInfo;
  /** The layer's tensors by ParamSpec name (trained ones at their current values). */
  values: Record<string, Float32Array>;
  /** The update rule's state by slot name (zeros before the first step), or null when the method has no rule. */
  state: Record<string, Float32Array> | null;
}

/** What a per-layer update rule gets, as graph tensors of the train step. */
export interface UpdateContext<C, S> {
  layer: LayerInfo;
  settings: S;
  config: C;
  /** This layer's trainable tensors (current values), by name. */
  p: Record<string, Tensor>;
  /** Their gradients (after global clipping), by name. */
  g: Record<string, Tensor>;
  /** The rule's state of this layer (declared by `state`), by slot name. */
  state: Record<string, Tensor>;
  /** This layer's and the model-level step inputs. */
  inputs: Record<string, Tensor>;
  /** Learning rate (schedule applied) and the 1-based step, f32 scalars. */
  lr: Tensor;
  step: Tensor;
  weightDecay: number;
  /**
   * The layer's frozen weight as stored, in the graph the rule is built in (LoRAPrune's importance reads W0); null
   * where that graph does not hold it (the update graph of a step with gradient accumulation).
   */
  weight: Tensor | null;
}

/**
 * An update rule that replaces the optimizer for one layer's trainable tensors (LoRA-Pro couples A and B), built
 * into the one-graph train step. Its state is saved in checkpoints with the optimizer's.
 */
export interface LayerUpdateRule<C, S> {
  /** Per-layer state slots and their shapes (zeros at the start). */
  state(layer: LayerInfo, settings: S, config: C): { name: string; shape: number[] }[];
  /** New values of the layer's trainable tensors and of its state. */
  apply(ctx: UpdateContext<C, S>): { p: Record<string, Tensor>; state: Record<string, Tensor> };
}

/** What a loss term gets: the adapted model's logits at the counted positions and the frozen model's, lazily. */
export interface LossTermContext<C> {
  config: C;
  /** Adapted logits [N, V] of the N predicted positions, and their targets [N] (i64; -100 = not counted). */
  logits: Tensor;
  targets: Tensor;
  /** [N] bool: whether a position counts (its target is not -100). */
  counted: Tensor;
  /** The same logits from the frozen model (every adapter off), built on first use, without gradient. */
  frozenLogits(): Tensor;
}

/** An extra term of the training loss (a regulariser); the trainer adds weight·value to the task loss. */
export interface LossTerm<C> {
  /** Reported as a metric under this name. */
  name: string;
  /** The term's scalar value. */
  build(ctx: LossTermContext<C>): Tensor;
}

/** A method: the required members define the parametrisation; the optional ones are abilities some methods need. */
export interface AdapterMethod<C = any, S = any> {
  /** Registry name, equal to the file name (`lora`, `vera`). */
  name: string;
  /** PEFT's peft_type when PEFT has the method; null for lorakit-only methods (saved under their upper-cased name). */
  peftType: string | null;
  /** Paper title and arXiv id, for `lorakit methods` and docs. */
  paper: string;
  /** Base layers it can wrap; others are refused with an error naming the layer and the kinds it supports. */
  layers: readonly LayerKind[];
  /** The config fields (zod shape: PEFT names and defaults), without the targeting fields every method shares. */
  fields: z.ZodRawShape;
  /**
   * Shared fields (targeting, PEFT's common ones) that PEFT's config class of this method does not have (VeraConfig
   * has no exclude_modules): PEFT would ignore them, so a value is refused and the field is left out of saved
   * adapter_config.json files (PEFT loads them without warnings).
   */
  peftLacks?: readonly string[];
  /** Checks across fields that a schema cannot say; `source` names the file in errors. */
  check?(config: C, source: string): void;
  /**
   * Fields whose values variants may claim (LoRA's init_lora_weights: "pissa" belongs to a variant): for each, the
   * values the method handles itself, described; any other value must be claimed by a registered variant.
   */
  openFields?: Record<string, { own(value: unknown): boolean; describe: string }>;
  /** Per-layer settings (rank and alpha patterns); methods without per-layer settings omit it. */
  settings?(config: C, layer: LayerInfo): S;
  /** Tensors this method adds to one layer. */
  params(layer: LayerInfo, settings: S, config: C): ParamSpec[];
  /** Initial values of those tensors (may read W0 and replace it). */
  init(ctx: InitContext<C, S>): Promise<InitResult>;
  /** The adapted layer output, as graph ops. */
  forward(ctx: ForwardContext<C, S>): Tensor;
  /**
   * Trainable parameters per the paper's formula, from the layers and settings alone (the contract test checks it
   * against the tensors actually made).
   */
  trainableCount(config: C, layers: readonly { layer: LayerInfo; settings: S }[]): number;
  /**
   * ΔW in the stored weight's layout (W0 + ΔW is the merged weight). A method merges when it has `delta` or `merge`;
   * with neither, merge and export refuse it.
   */
  delta?(v: LayerValues<C, S>): Float32Array;
  /** Why the method cannot merge, when it cannot (merge and export refuse with this reason). */
  unmergeable?: string;
  /**
   * Why one layer of a mergeable method cannot be merged, or null (LoRA on a grouped or dilated Conv2d): merge and
   * export refuse the whole adapter, before any weight changes, when a targeted layer has a reason.
   */
  unmergeableLayer?(layer: LayerInfo, settings: S, config: C): string | null;
  /**
   * Refuses a targeted layer the method cannot wrap with its settings (LoRA: a Conv2d whose groups do not divide
   * r); runs when the adapter is added, before any initialiser; `source` names the config in errors.
   */
  checkLayer?(layer: LayerInfo, settings: S, config: C, source: string): void;
  /**
   * The merged weight when it is not W0 + ΔW (`w0` is the current frozen weight, stored layout): DoRA's rescaled rows;
   * MiSS's "bat" mode (W0 + W0·T + T blockwise, no ΔW without W0) and PaCA's written columns (a replacement whose ΔW
   * depends on W0), which merge without a `delta`.
   */
  merge?(v: LayerValues<C, S>, w0: Float32Array): Float32Array;
  /** Model-level tensors, sized from all targeted layers (VeRA's shared projections). Saved as `base_model.<name>`. */
  shared?(config: C, layers: readonly LayerInfo[]): ParamSpec[];
  /** Initial values of the shared tensors. */
  initShared?(ctx: SharedInitContext<C>): Promise<Record<string, Float32Array>>;
  /**
   * Per-layer values drawn for all targeted layers together, by layer path (Uni-LoRA's balanced assignment of every
   * LoRA entry of the model to an entry of θ): each layer's `init` receives its own as `ctx.joint`.
   */
  jointInit?(ctx: SharedInitContext<C>): Promise<Map<string, Record<string, Float32Array>>>;
  /**
   * The layer's tensors in adapter files when they are not its saved ParamSpecs as F32, or null (the default);
   * `shared` are the adapter's model-level tensors (a layout may write per-layer copies of them, as PEFT's RandLoRA).
   */
  fileLayout?(layer: LayerInfo, settings: S, config: C, shared: readonly ParamSpec[]): FileLayout<C, S> | null;
  /** Per-step host inputs (DyLoRA's sampled rank, LoRA-Pro's r×r decompositions). */
  stepInputs?(config: C, layers: readonly { layer: LayerInfo; settings: S }[]): StepInputSpec<C>[];
  /** A per-layer update rule replacing the optimizer for this method's trainable tensors. */
  update?: LayerUpdateRule<C, S>;
  /** Extra loss terms. */
  lossTerms?(config: C): LossTerm<C>[];
  /**
   * Whether the initialiser needs calibration gradients of the frozen weights (LoRA-GA); how many batches. `loading`
   * is true when a saved adapter is being loaded: a method that needs the gradients only for saved tensors (LoRA-SB)
   * returns null then, so a folder loads without data.
   */
  calibration?(config: C, loading: boolean): { batches: number } | null;
  /** The intermediate values variants of this method receive in `forward` (LoRA: its own term s·B(A(x̃))). */
  parts?(ctx: ForwardContext<C, S>): Record<string, Tensor>;
  /**
   * The adapter as a plain LoRA of the untouched base, for methods whose init replaced W0 (PEFT's
   * `path_initial_model_for_weight_conversion`): the new config and, per layer, the new tensors.
   */
  convertToBase?(
    config: C,
    layers: readonly (LayerValues<C, S> & { initial: Record<string, Float32Array> })[],
  ): { config: Record<string, unknown>; layers: Map<string, Record<string, Float32Array>> };
}

/**
 * A variant: a small change to the methods it names, picked by a config field (`use_dora`,
 * `init_lora_weights: "pissa"`, ...). Its hooks run after the method's (init), replace the method's output
 * (forward, merge), or add to it (params, step inputs, loss terms, update rule). Variants of one method compose
 * when their hooks do not collide (two variants replacing the forward are refused).
 */
export interface MethodVariant<C = any, S = any> {
  /** Registry name, equal to the file name. */
  name: string;
  paper: string;
  /** The methods it modifies, by registry name, or '*' for every method. */
  of: readonly string[] | '*';
  /** Whether `config` asks for this variant. */
  applies(config: C): boolean;
  /** The config fields that select it with its defaults (`lorakit methods`, docs; `applies` holds for them). */
  selectedBy: Record<string, unknown>;
  /**
   * false when the selecting field is one of PEFT's but this value is not in PEFT's releases (SLoRA's "s_lora" is its
   * official fork's): `lorakit methods` then lists no PEFT name.
   */
  inPeft?: false;
  /** The open field of its method whose values pick this variant, and those values described for errors. */
  claims?: { field: string; describe: string };
  /** Config fields it adds to the methods it modifies (lorakit fields; PEFT's own are in the method's schema). */
  fields?: z.ZodRawShape;
  /** Field names that are training settings only: left out of saved adapter_config.json files (PEFT loads them). */
  trainingOnly?: readonly string[];
  /** Extra config checks. */
  check?(config: C, source: string): void;
  /** Layer kinds it supports, if fewer than its method's. */
  layers?: readonly LayerKind[];
  /** Tensors it adds to a layer (after the method's and earlier variants'). */
  params?(layer: LayerInfo, settings: S, config: C): ParamSpec[];
  /**
   * Rewrites the tensors the method (and earlier variants) put on a layer: freezes some (FFA-LoRA's A, IntTune's A
   * and B) or changes their shapes (BD-LoRA's block-diagonal factors). The variant's init then returns values of
   * the new sizes, and its forward, ΔW and count follow the new tensors.
   */
  adjustParams?(specs: ParamSpec[], layer: LayerInfo, settings: S, config: C): ParamSpec[];
  /** Runs after the method's initialiser (and earlier variants'); may replace values and the frozen weight. */
  init?(ctx: InitContext<C, S> & { values: Record<string, Float32Array> }): Promise<InitResult>;
  /**
   * Replaces the method's output; `parts` comes from the method's `parts`, built only when the variant reads it (a
   * variant whose factors the method's term cannot multiply, BD-LoRA's, computes its own).
   */
  forward?(ctx: ForwardContext<C, S>, parts: Record<string, Tensor>): Tensor;
  /** Replaces the method's ΔW (SLoRA's s·B·N·A, BD-LoRA's block-diagonal factors, a nested rank's truncation). */
  delta?(v: LayerValues<C, S>): Float32Array;
  /** The merged weight when it is not W0 + ΔW (DoRA); `delta` is the method's ΔW, `w0` the current base. */
  merge?(v: LayerValues<C, S>, w0: Float32Array, delta: Float32Array): Float32Array;
  /** Whether this variant makes the adapter unmergeable (with the reason). */
  unmergeable?: string;
  /** Why one layer cannot be merged with this variant, or null (as the method's, checked after it). */
  unmergeableLayer?(layer: LayerInfo, settings: S, config: C): string | null;
  /** Refuses a targeted layer this variant cannot handle (after the method's check). */
  checkLayer?(layer: LayerInfo, settings: S, config: C, source: string): void;
  /**
   * What the variant changes in the trainable count, by the paper's formula: added tensors count positive, tensors
   * it freezes or shrinks (adjustParams) negative (FFA-LoRA: −r·in per layer, so the total is the paper's r·out).
   */
  trainableCount?(config: C, layers: readonly { layer: LayerInfo; settings: S }[]): number;
  /** Replaces the method's conversion to a plain LoRA of the untouched base (SLoRA folds N into B). */
  convertToBase?: AdapterMethod<C, S>['convertToBase'];
  stepInputs?(config: C, layers: readonly { layer: LayerInfo; settings: S }[]): StepInputSpec<C>[];
  update?: LayerUpdateRule<C, S>;
  lossTerms?(config: C): LossTerm<C>[];
  calibration?(config: C, loading: boolean): { batches: number } | null;
}

/** A registry entry. */
export type RegistryEntry = AdapterMethod | MethodVariant;

/** Whether a registry entry is a variant. */
export const isVariant = (e: RegistryEntry): e is MethodVariant => 'of' in e;
