/**
 * One training step as one graph: forward (already built), backward (autodiff) and the update — the optimizer's for
 * parameter groups, a method's own rule (CustomUpdate) for the parameters it claims. Trainable parameters and all
 * state are graph inputs; their new values are graph outputs, so the host keeps them between steps (they are small
 * for adapters) while frozen weights stay initializers.
 */
import { LorakitError, check } from '../errors.ts';
import { type DType, type Graph, type Tensor, grad } from '../graph/index.ts';
import type { Session, Feed, HostTensor } from '../runtime/index.ts';
import type { Optimizer } from './optimizer.ts';
import { clipScale, globalNorm } from './clip.ts';

export interface ParamGroup {
  params: Tensor[];
  /** This group's learning rate is lr·lrRatio (LoRA+ trains B with a larger ratio). */
  lrRatio?: number;
  weightDecay?: number;
}

/**
 * An update rule that replaces the optimizer for some parameters (a method's per-layer rule, e.g. LoRA-Pro): it gets
 * their gradients (after global clipping), its own state and extra per-step inputs, and returns new values.
 */
export interface CustomUpdate {
  /** Unique among the rules of one step. */
  name: string;
  params: Tensor[];
  /** State tensors with unique names (zeros at the start; saved in checkpoints with the optimizer state). */
  state: { name: string; shape: number[] }[];
  /** Graph inputs the rule reads, fed at each step; declared in the graph the update is built in if absent. */
  inputs: { name: string; dtype: DType; shape: number[] }[];
  apply(ctx: {
    params: Tensor[];
    grads: Tensor[];
    state: Tensor[];
    inputs: Tensor[];
    lr: Tensor;
    step: Tensor;
    weightDecay: number;
  }): { params: Tensor[]; state: Tensor[] };
  lrRatio?: number;
  weightDecay?: number;
}

export interface TrainStepOptions {
  optimizer: Optimizer;
  groups: ParamGroup[];
  /** Parameters updated by their own rule instead of the optimizer. */
  updates?: CustomUpdate[];
  /** Clip gradients to this global L2 norm (none by default). */
  clipNorm?: number;
  /** Extra scalar outputs to report each step. */
  metrics?: Record<string, Tensor>;
  /** Buffers: f32 graph inputs, not trained, whose next value the forward pass computes. */
  buffers?: { input: Tensor; next: Tensor }[];
}

/** One host-held tensor of a step: its graph-input name, shape and the output holding its next value. */
export interface StepTensor {
  name: string;
  shape: number[];
  out: string;
}

/** Names that connect host state to the step graph. */
export interface TrainStepLayout {
  params: StepTensor[];
  /** The scalar inputs the host computes each step (the optimizer's per-group scalars), by input name. */
  scalars(step: number, lr: number): Record<string, number>;
  /** Optimizer slots and update-rule state. */
  state: StepTensor[];
  /** Buffers the forward pass updates (held and saved like params, never trained). */
  buffers: StepTensor[];
  metrics: string[];
}

export const stateName = (param: string, slot: string) => `${param}::${slot}`;
export const newName = (name: string) => `${name}::new`;

/** A graph input by name: the existing one, or a new one (an update rule's per-step inputs). */
export function inputNamed(graph: Graph, i: { name: string; dtype: DType; shape: number[] }): Tensor {
  return graph.inputs.find((t) => t.name === i.name) ?? graph.input(i.name, i.dtype, i.shape);
}

/**
 * Adds gradients and the update to `graph`, whose `loss` is a scalar built from the params (graph inputs) of
 * `groups` and `updates`. Adds inputs `lr` and `step` (f32 scalars, step 1-based) and outputs `loss`, `grad_norm`,
 * metrics, and the new params and state under `newName(...)`.
 */
export function addTrainStep(graph: Graph, loss: Tensor, opts: TrainStepOptions): TrainStepLayout {
  check(loss.rank === 0, 'LK_INVALID_ARGUMENT', `train step: the loss must be a scalar, got ${loss.toString()}`);
  const updates = opts.updates ?? [];
  const all = [...opts.groups.flatMap((g) => g.params), ...updates.flatMap((u) => u.params)];
  check(all.length > 0, 'LK_INVALID_ARGUMENT', 'train step: no trainable parameters');
  for (const p of all) {
    if (p.kind !== 'input' || p.dtype !== 'f32' || !p.shape.every((d) => typeof d === 'number')) {
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `train step: parameter ${p.toString()} must be an f32 graph input with a static shape`,
      );
    }
  }
  check(
    new Set(all).size === all.length,
    'LK_INVALID_ARGUMENT',
    'train step: a parameter appears in two groups or rules',
  );
  const lr = graph.input('lr', 'f32', []);
  const step = graph.input('step', 'f32', []);
  const grads = grad(loss, all);
  // each group's buckets (lists of parameter indices) and their joined gradients, which the global norm also reads:
  // one sum of squares per bucket, not two nodes per parameter
  let at = 0;
  const plans = opts.groups.map(({ params }) => {
    const gGrads = grads.slice(at, (at += params.length));
    return buckets(params, opts.optimizer.elementwise === true).map((members) => ({
      members,
      grad: graph.concat(
        members.map((k) => gGrads[k]),
        0,
      ),
    }));
  });
  const ruleGrads = grads.slice(at);
  const norm = globalNorm([...plans.flatMap((b) => b.map((x) => x.grad)), ...ruleGrads]);
  let clip: Tensor | null = null;
  if (opts.clipNorm !== undefined) {
    check(opts.clipNorm > 0, 'LK_INVALID_ARGUMENT', `train step: clipNorm must be > 0, got ${opts.clipNorm}`);
    clip = clipScale(norm, opts.clipNorm);
  }
  // clipping scales each element alone, so a bucket's joined gradients take one Mul rather than one per parameter
  const clipped = (g: Tensor) => (clip ? g.mul(clip) : g);
  graph.output('loss', loss);
  graph.output('grad_norm', norm);
  // each group's optimizer scalars: f32 scalar inputs, computed on the host in float64 at the group's lr
  const scalarInputs = opts.groups.map((group, gi) => {
    const names = Object.keys(opts.optimizer.scalars?.({ step: 1, lr: 1, weightDecay: 0 }) ?? {});
    const tensors = Object.fromEntries(names.map((n) => [n, graph.input(`optim.group${gi}.${n}`, 'f32', [])]));
    return { group, tensors };
  });
  const scalars = (t: number, lr: number): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const { group, tensors } of scalarInputs) {
      const ctx = { step: t, lr: lr * (group.lrRatio ?? 1), weightDecay: group.weightDecay ?? 0 };
      const values = opts.optimizer.scalars?.(ctx) ?? {};
      for (const [n, input] of Object.entries(tensors)) out[input.name] = values[n];
    }
    return out;
  };
  const layout: TrainStepLayout = { params: [], scalars, state: [], buffers: [], metrics: ['loss', 'grad_norm'] };
  for (const [k, t] of Object.entries(opts.metrics ?? {})) {
    graph.output(k, t);
    layout.metrics.push(k);
  }
  const put = (into: StepTensor[], input: Tensor, next: Tensor) => {
    graph.output(newName(input.name), next);
    into.push({ name: input.name, shape: input.shape as number[], out: newName(input.name) });
  };
  const scaled = (ratio: number | undefined) => (ratio !== undefined && ratio !== 1 ? lr.mul(ratio) : lr); // 0 too
  for (const b of opts.buffers ?? []) put(layout.buffers, b.input, b.next);
  let i = 0;
  graph.scope('optim', () => {
    for (const [gi, group] of opts.groups.entries()) {
      const ctx = { lr: scaled(group.lrRatio), step, weightDecay: group.weightDecay ?? 0 };
      const { params } = group;
      const states = params.map((p) =>
        opts.optimizer.stateSlots.map((s) => graph.input(stateName(p.name, s), 'f32', p.shape)),
      );
      const next: { param: Tensor; state: Tensor[] }[] = [];
      for (const { members, grad } of plans[gi]) {
        const join = (ts: Tensor[]) => graph.concat(ts, 0);
        const r = opts.optimizer.update({
          ...ctx,
          param: join(members.map((k) => params[k])),
          grad: clipped(grad),
          state: opts.optimizer.stateSlots.map((_, j) => join(members.map((k) => states[k][j]))),
          scalars: scalarInputs[gi].tensors,
        });
        const sizes = members.map((k) => params[k].shape[0] as number);
        const split = (t: Tensor) => (members.length === 1 ? [t] : t.split(sizes, 0));
        const [ps, ss] = [split(r.param), r.state.map(split)];
        members.forEach((k, m) => (next[k] = { param: ps[m], state: ss.map((s) => s[m]) }));
      }
      params.forEach((p, k) => {
        put(layout.params, p, next[k].param);
        next[k].state.forEach((t, j) => put(layout.state, states[k][j], t));
      });
    }
    for (const u of updates) {
      const state = u.state.map((s) => graph.input(s.name, 'f32', s.shape));
      const r = u.apply({
        params: u.params,
        grads: u.params.map(() => clipped(ruleGrads[i++])),
        state,
        inputs: u.inputs.map((x) => inputNamed(graph, x)),
        lr: scaled(u.lrRatio),
        step,
        weightDecay: u.weightDecay ?? 0,
      });
      u.params.forEach((p, j) => put(layout.params, p, r.params[j]));
      state.forEach((t, j) => put(layout.state, t, r.state[j]));
    }
  });
  return layout;
}

/**
 * At most this many parameters per bucket: the Split's i64 sizes (8 bytes each) then stay under the 1 KiB from which
 * a saved optimised model keeps initializers in its external file, where ORT's shape inference cannot read them
 * when it loads the model (runtime.ts).
 */
const BUCKET_MAX = 64;

/**
 * The buckets of a group's parameters, as lists of their indices: with an elementwise optimizer, the parameters of
 * rank ≥ 1 whose dimensions after the first are equal (LoRA's A of every projection with one input width) join one
 * bucket, in order, up to BUCKET_MAX; otherwise, and for scalars, each parameter is its own.
 */
function buckets(params: readonly Tensor[], elementwise: boolean): number[][] {
  if (!elementwise) return params.map((_, k) => [k]);
  const byTail = new Map<string, number[]>();
  const out: number[][] = [];
  params.forEach((p, k) => {
    if (p.rank === 0) return void out.push([k]);
    const key = p.shape.slice(1).join(',');
    const b = byTail.get(key);
    if (b && b.length < BUCKET_MAX) b.push(k);
    else {
      const nb = [k];
      byTail.set(key, nb);
      out.push(nb);
    }
  });
  return out;
}

/** Host side of a compiled step: holds params and all state, feeds them and takes the new values back. */
export class TrainStepRunner {
  readonly values = new Map<string, Float32Array>();
  stepCount = 0;

  constructor(
    private session: Session,
    readonly layout: TrainStepLayout,
    init: Record<string, Float32Array>,
  ) {
    for (const p of [...layout.params, ...layout.buffers]) {
      const v = init[p.name];
      check(v, 'LK_INVALID_ARGUMENT', `train step: no initial value for parameter "${p.name}"`);
      check(
        v.length === p.shape.reduce((a, b) => a * b, 1),
        'LK_SHAPE_MISMATCH',
        `train step: initial value of "${p.name}" has ${v.length} values, shape [${p.shape}] needs more or fewer`,
      );
      this.values.set(p.name, Float32Array.from(v));
    }
    for (const s of layout.state) this.values.set(s.name, new Float32Array(s.shape.reduce((a, b) => a * b, 1)));
  }

  /** Runs one step with the batch feeds (and any per-step inputs); returns the metrics (loss, grad_norm, ...). */
  async step(batch: Record<string, Feed>, lr: number): Promise<Record<string, number>> {
    this.stepCount++;
    const feeds: Record<string, Feed> = {
      ...batch,
      lr: new Float32Array([lr]),
      step: new Float32Array([this.stepCount]),
    };
    for (const [k, v] of Object.entries(this.layout.scalars(this.stepCount, lr))) feeds[k] = new Float32Array([v]);
    for (const [k, v] of this.values) feeds[k] = v;
    const out: Record<string, HostTensor> = await this.session.run(feeds);
    for (const t of [...this.layout.params, ...this.layout.state, ...this.layout.buffers]) {
      this.values.set(t.name, out[t.out].data as Float32Array);
    }
    return Object.fromEntries(this.layout.metrics.map((m) => [m, Number(out[m].data[0])]));
  }

  /** Frees the step's session. */
  dispose(): Promise<void> {
    return this.session.dispose();
  }

  /** The current value of a parameter. */
  param(name: string): Float32Array {
    const v = this.values.get(name);
    check(v, 'LK_INVALID_ARGUMENT', `train step: unknown parameter "${name}"`);
    return v;
  }
}
