/**
 * The contract between the Trainer and what it trains. A `TrainTask` says how to record the forward pass and loss,
 * which graph inputs are trainable (in groups), their initial values, where batches come from (resumable at a
 * `DataPosition`), how to evaluate and how to save the result. It knows nothing about optimizers, schedules,
 * accumulation or checkpoints: the Trainer builds the step graph from `build()`, because clipping, accumulation,
 * LoRA+ ratios and the optimizer are all nodes of that graph. Adapters (src/peft) and plain models implement it
 * alike; test/train/fixtures/tasks.ts is a 100-line example.
 */
import type { Graph, Tensor } from '../graph/index.ts';
import type { Rng } from '../linalg/index.ts';
import type { CustomUpdate } from '../optim/index.ts';
import type { CompileOptions, Feed } from '../runtime/index.ts';

/** Where a batch stream stands: the epoch and the index of the next batch within it (both 0-based). */
export interface DataPosition {
  epoch: number;
  index: number;
}

/** One (micro-)batch. */
export interface TrainBatch {
  /** Graph inputs of the batch (token ids, labels, masks, …) by input name. */
  feeds: Record<string, Feed>;
  /**
   * How many loss terms the batch's mean loss averages over (non-ignored label tokens, examples). Micro-batches of
   * one accumulated step are weighted by it, so that k micro-batches give the gradient of the mean over all of
   * their terms (the gradient of one concatenated batch). Default 1 (all micro-batches weigh the same).
   */
  weight?: number;
  /** Tokens this batch processes, for tokens/s and the `tokens` count (default: `weight`, else 1). */
  tokens?: number;
  /** The position right after this batch: where a run resumed after consuming it continues. */
  next: DataPosition;
}

/** A batch stream that can start at any position; it may end (after the last epoch) or go on forever. */
export type BatchStream = Iterable<TrainBatch> | AsyncIterable<TrainBatch>;

/** A group of trainable tensors with its own optimizer settings. */
export interface TaskParamGroup {
  /** Shown in errors and logs (e.g. "A", "B", "B_no_decay"). */
  name: string;
  /** Graph inputs of `TaskGraph.graph`: f32 with static shapes. */
  params: Tensor[];
  /** lr multiplier of this group (default 1); 0 freezes it bit for bit (with weightDecay 0), e.g. FFA-LoRA's A. */
  lrRatio?: number;
  /** Weight decay of this group (default: the Trainer's `weightDecay` option). */
  weightDecay?: number;
  /** LoRA+ "B" group: its lr ratio is further multiplied by the Trainer's `loraplusLrRatio` (PEFT loraplus_lr_ratio).
   * */
  loraplusB?: boolean;
}

/** A freshly recorded forward pass. */
export interface TaskGraph {
  graph: Graph;
  /** Scalar mean loss of one batch. */
  loss: Tensor;
  /** Every trainable tensor, in groups; a tensor belongs to exactly one group. */
  groups: TaskParamGroup[];
  /** Extra scalar tensors to report each step (averaged over micro-batches like the loss). */
  metrics?: Record<string, Tensor>;
  /** Trainable tensors updated by their own rule instead of the optimizer (a method's per-layer rule). */
  updates?: CustomUpdate[];
  /** Buffers: f32 graph inputs, not trained, whose next value the forward pass computes (held and saved like params). */
  buffers?: { input: Tensor; next: Tensor }[];
}

/** Parameter values by graph input name (the host copy the Trainer holds). */
export type ParamValues = ReadonlyMap<string, Float32Array>;

/** What an evaluation returns: the mean loss over the held-out data (perplexity is exp(loss)). */
export interface EvalResult {
  loss: number;
  /** Loss terms the mean is over (reported, not needed). */
  weight?: number;
}

/** One sample generation of an evaluation: a prompt and what the model continued it with. */
export interface TaskSample {
  /** The prompt as configured: text, or a conversation. */
  prompt: string | { messages: { role: string; content: string }[] };
  /** The generated text (special tokens left out). */
  completion: string;
  /** Why generation stopped: an eos token or the token budget. */
  finish_reason: string;
  /** New tokens generated. */
  new_tokens: number;
}

/** Per-step inputs made on the host, e.g. dropout masks or a sampled rank (DyLoRA). */
export interface StepInputContext {
  /** The optimizer step being taken, 1-based. */
  step: number;
  /** Index of the micro-batch within the step (0 … accumulation−1). */
  micro: number;
  /** The run's generator; its state is saved in checkpoints, so draws resume exactly. */
  rng: Rng;
  /** The current trained values by graph-input name (the same for every micro-batch of a step). */
  params: ParamValues;
  /** The optimizer and update-rule state after the previous step, by state name. */
  state?: ParamValues;
}

/** What the Trainer trains. Only `build`, `initialParams` and `batches` are required. */
export interface TrainTask {
  /**
   * Records the forward pass and loss into a new Graph and names the trainable inputs. Called once per compiled
   * graph (the train step, and the gradient graph when accumulating), so it must not reuse a Graph.
   */
  build(): TaskGraph;
  /** Initial values of the trainable inputs and buffers by name; `rng` is the run's generator (fresh runs only). */
  initialParams(rng: Rng): Record<string, Float32Array> | Promise<Record<string, Float32Array>>;
  /** Batches from `from` on, in the order a run consumes them; the same position always gives the same batches. */
  batches(from: DataPosition): BatchStream;
  /** Batches in one epoch; needed to size the schedule when training for `epochs`. */
  batchesPerEpoch?: number;
  /** Extra feeds for one micro-batch, made from the run's rng (dropout masks, sampled ranks). */
  stepInputs?(ctx: StepInputContext): Record<string, Feed>;
  /** Mean loss over held-out data with these parameters (see `lossEvaluator` for the usual implementation). */
  evaluate?(params: ParamValues): Promise<EvalResult>;
  /** Sample generations with these parameters, written at each evaluation as `samples/step-<N>.jsonl`. */
  sample?(params: ParamValues): Promise<TaskSample[]>;
  /**
   * The settings this task's batches and graphs depend on (batch size, data order seed, dataset size), by the name
   * a user sets them with. They are saved in checkpoints, and resuming with other values is refused unless
   * overridden (a resumed run would not continue the same run).
   */
  settings?: Readonly<Record<string, string | number | boolean | null>>;
  /** Writes the trained artefact (an adapter folder) into `dir`, which exists. */
  save?(dir: string, params: ParamValues): Promise<void>;
  /** How to compile this task's graphs (execution provider, threads). */
  compileOptions?: CompileOptions;
}

/** Turns a sync or async batch stream into an async iterator. */
export function batchIterator(stream: BatchStream): AsyncIterator<TrainBatch> {
  if (Symbol.asyncIterator in stream) return (stream as AsyncIterable<TrainBatch>)[Symbol.asyncIterator]();
  const it = (stream as Iterable<TrainBatch>)[Symbol.iterator]();
  return { next: async () => it.next() };
}
