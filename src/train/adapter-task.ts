/**
 * What every task that trains one adapter of a PeftModel shares, whatever the model and loss: binding the adapters
 * into the task's graph (dropout seeded per micro-batch), the parameter groups from the binding's typed handles
 * (PEFT's LoRA+ rule by role; layers with their own update rule leave the optimizer), the per-step host inputs
 * (drawn once per optimizer step from the run's generator), the initial values and saving the adapter folder
 * (an adapter whose initialisation replaced the frozen weights is written, by default, as the plain LoRA of the
 * untouched base: the folder then applies to the model its config names, in PEFT, lorakit or any LoRA loader).
 * The causal-LM task (causal-lm.ts) and the adapter contract test's toy task both build on it.
 * `unetTaskGraph` gives the U-Net tasks (segmentation.ts, diffusion.ts) their graph with one adapter or with every
 * U-Net weight trained.
 * Not here: the model, the loss, the data.
 */
import type { Graph, Tensor } from '../graph/index.ts';
import type { ContextOptions } from '../models/index.ts';
import type { ModelContext } from '../nn/index.ts';
import type { CustomUpdate } from '../optim/index.ts';
import { type AdapterBinding, type PeftModel, type TrainableHandle, saveAdapter } from '../peft/index.ts';
import type { Feed } from '../runtime/index.ts';
import type { ParamValues, StepInputContext, TaskGraph, TaskParamGroup } from './task.ts';

/**
 * PEFT's LoRA+ grouping, from roles: B factors and 1-D tensors in "B", the other tensors in "A", and biases in
 * "B_no_decay" without weight decay (transformers decays no bias; PEFT's LoRA+ keeps them in their own group).
 */
export function roleGroups(handles: readonly TrainableHandle[]): TaskParamGroup[] {
  const isB = (h: TrainableHandle) => h.role === 'b' || h.tensor.rank === 1;
  const pick = (f: (h: TrainableHandle) => boolean) => handles.filter(f).map((h) => h.tensor);
  const groups: TaskParamGroup[] = [];
  const a = pick((h) => h.role !== 'bias' && !isB(h));
  const b = pick((h) => h.role !== 'bias' && isB(h));
  const noDecay = pick((h) => h.role === 'bias');
  if (a.length) groups.push({ name: 'A', params: a });
  if (b.length) groups.push({ name: 'B', params: b, loraplusB: true });
  if (noDecay.length) groups.push({ name: 'B_no_decay', params: noDecay, loraplusB: true, weightDecay: 0 });
  return groups;
}

/** The shared parts of a task training adapter `adapter` of `peft`. */
export interface AdapterTraining {
  /** Binds the adapters into `graph`; `training` adds a dropout-seed input and feeds the adapter's step inputs. */
  bind(graph: Graph, training: boolean): AdapterBinding;
  /**
   * The TaskGraph of a recorded forward pass: groups by role (`weights`: base parameters trained in place, the
   * weight source's inputs), update rules (training graphs only).
   */
  taskGraph(
    graph: Graph,
    binding: AdapterBinding,
    loss: Tensor,
    opts: { training: boolean; weights?: Tensor[]; metrics?: Record<string, Tensor> },
  ): TaskGraph;
  /** The adapter's trainable values and buffers by graph-input name. */
  initialParams(): Record<string, Float32Array>;
  /** Feeds of one micro-batch: the adapter's step inputs (same for all micro-batches of a step) and a dropout seed. */
  stepInputs(ctx: StepInputContext): Record<string, Feed>;
  /** Writes the adapter with these values as a PEFT folder. */
  save(dir: string, params: ParamValues): Promise<void>;
}

/** How a training task writes its adapter folders (final/ and best/). */
export interface AdapterSaveSettings {
  /** Written into adapter_config.json as base_model_name_or_path. */
  baseModel?: string | null;
  /**
   * For an adapter whose initialisation replaced frozen weights (PiSSA, OLoRA): write it as the plain rank-2r LoRA
   * of the untouched base (PEFT's `path_initial_model_for_weight_conversion`), so the folder means the same to every
   * tool that applies it to the model named in base_model_name_or_path. Default true; false writes the adapter as
   * trained (init_lora_weights kept), which PEFT and lorakit re-initialise at load to rebuild the residual.
   * No effect on other adapters.
   */
  convertToBase?: boolean;
}

/** The AdapterTraining of adapter `adapter` of `peft`, saving its folders as `save` says. */
export function adapterTraining(peft: PeftModel, adapter: string, save: AdapterSaveSettings = {}): AdapterTraining {
  const { baseModel = null, convertToBase = true } = save;
  let drawn: { step: number; values: Record<string, Feed> } | null = null;
  return {
    bind(graph, training) {
      const dropoutSeed = training ? graph.input('dropout_seed', 'f32', []) : undefined;
      return peft.bind({ train: adapter, dropoutSeed, feedStepInputs: training });
    },
    taskGraph(graph, binding, loss, opts) {
      const updates: CustomUpdate[] = opts.training ? binding.updateRules() : [];
      const ruled = new Set(updates.flatMap((u) => u.params));
      // base parameters trained in place (biases) group like any other tensor: by PEFT's 1-D rule
      const inPlace = (opts.weights ?? []).map(
        (tensor): TrainableHandle => ({ tensor, adapter, role: 'bias', layer: null }),
      );
      const groups = roleGroups([...binding.trainables().filter((h) => !ruled.has(h.tensor)), ...inPlace]);
      const buffers = binding.bufferUpdates();
      return { graph, loss, groups, updates, buffers: opts.training ? buffers : [], metrics: opts.metrics };
    },
    initialParams: () => Object.fromEntries([...peft.trainableValues(adapter), ...peft.stateValues(adapter)]),
    stepInputs(ctx) {
      // drawn at the step's first micro-batch, before its dropout seed, so resumed runs draw the same
      if (drawn === null || drawn.step !== ctx.step)
        drawn = { step: ctx.step, values: peft.stepInputValues(adapter, ctx) };
      return { ...drawn.values, dropout_seed: new Float32Array([Math.floor(ctx.rng.next() * 1e6)]) };
    },
    async save(dir, params) {
      peft.setValues(adapter, params);
      await saveAdapter(peft, adapter, dir, { baseModel, convertToBase });
    },
  };
}

/**
 * The training TaskGraph of a U-Net loss `lossOf(ctx)`: with `adapter`, recorded through that adapter's hooks and
 * weight overrides (its AdapterTraining groups and rules); without, every weight in `names` is a trained graph input,
 * in one group `unet` (full fine-tuning).
 */
export function unetTaskGraph<C>(
  g: Graph,
  unet: { context(graph: Graph, opts?: ContextOptions): ModelContext<C> },
  names: string[],
  adapter: { shared: AdapterTraining; peft: PeftModel; name: string | undefined } | null,
  lossOf: (ctx: ModelContext<C>) => Tensor,
): TaskGraph {
  if (adapter) {
    const binding = adapter.shared.bind(g, true);
    const ctx = unet.context(g, { hooks: binding.hooks, overrides: adapter.peft.weightOverrides(adapter.name) });
    return adapter.shared.taskGraph(g, binding, lossOf(ctx), { training: true });
  }
  const ctx = unet.context(g, { trainable: names });
  return { graph: g, loss: lossOf(ctx), groups: [{ name: 'unet', params: [...ctx.weights.inputs.values()] }] };
}
