/**
 * One training step as one graph: forward (already built), backward (autodiff) and the optimizer update.
 * Trainable parameters and optimizer state are graph inputs; their new values are graph outputs, so the host
 * keeps them between steps (they are small for adapters) while frozen weights stay initializers.
 */
import { LorakitError, check } from '../errors.ts';
import { type Graph, type Tensor, grad } from '../graph/index.ts';
import type { Session, Feed, HostTensor } from '../runtime/index.ts';
import type { Optimizer } from './optimizer.ts';
import { clipByGlobalNorm, globalNorm } from './clip.ts';

export interface ParamGroup {
  params: Tensor[];
  /** This group's learning rate is lr·lrRatio (LoRA+ trains B with a larger ratio). */
  lrRatio?: number;
  weightDecay?: number;
}

export interface TrainStepOptions {
  optimizer: Optimizer;
  groups: ParamGroup[];
  /** Clip gradients to this global L2 norm (none by default). */
  clipNorm?: number;
  /** Extra scalar outputs to report each step. */
  metrics?: Record<string, Tensor>;
}

/** Names that connect host state to the step graph. */
export interface TrainStepLayout {
  params: { name: string; shape: number[]; out: string; state: string[]; stateOut: string[] }[];
  metrics: string[];
}

export const stateName = (param: string, slot: string) => `${param}::${slot}`;
export const newName = (name: string) => `${name}::new`;

/**
 * Adds gradients and the update to `graph`, whose `loss` is a scalar built from `groups`' params (graph inputs).
 * Adds inputs `lr` and `step` (f32 scalars, step 1-based) and outputs `loss`, `grad_norm`, metrics, and the new
 * params and state under `newName(...)`.
 */
export function addTrainStep(graph: Graph, loss: Tensor, opts: TrainStepOptions): TrainStepLayout {
  check(loss.rank === 0, 'LK_INVALID_ARGUMENT', `train step: the loss must be a scalar, got ${loss.toString()}`);
  const all = opts.groups.flatMap((g) => g.params);
  check(all.length > 0, 'LK_INVALID_ARGUMENT', 'train step: no trainable parameters');
  for (const p of all) {
    if (p.kind !== 'input' || p.dtype !== 'f32' || !p.shape.every((d) => typeof d === 'number')) {
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `train step: parameter ${p.toString()} must be an f32 graph input with a static shape`,
      );
    }
  }
  check(new Set(all).size === all.length, 'LK_INVALID_ARGUMENT', 'train step: a parameter appears in two groups');
  const lr = graph.input('lr', 'f32', []);
  const step = graph.input('step', 'f32', []);
  let grads = grad(loss, all);
  let norm: Tensor;
  if (opts.clipNorm !== undefined) {
    check(opts.clipNorm > 0, 'LK_INVALID_ARGUMENT', `train step: clipNorm must be > 0, got ${opts.clipNorm}`);
    ({ grads, norm } = clipByGlobalNorm(grads, opts.clipNorm));
  } else norm = globalNorm(grads);
  graph.output('loss', loss);
  graph.output('grad_norm', norm);
  const layout: TrainStepLayout = { params: [], metrics: ['loss', 'grad_norm'] };
  for (const [k, t] of Object.entries(opts.metrics ?? {})) {
    graph.output(k, t);
    layout.metrics.push(k);
  }
  let i = 0;
  graph.scope('optim', () => {
    for (const group of opts.groups) {
      const glr = group.lrRatio && group.lrRatio !== 1 ? lr.mul(group.lrRatio) : lr;
      for (const p of group.params) {
        const g = grads[i++];
        const state = opts.optimizer.stateSlots.map((s) => graph.input(stateName(p.name, s), 'f32', p.shape));
        const r = opts.optimizer.update({
          param: p,
          grad: g,
          state,
          lr: glr,
          step,
          weightDecay: group.weightDecay ?? 0,
        });
        graph.output(newName(p.name), r.param);
        r.state.forEach((t, j) => graph.output(newName(state[j].name), t));
        layout.params.push({
          name: p.name,
          shape: p.shape as number[],
          out: newName(p.name),
          state: state.map((s) => s.name),
          stateOut: state.map((s) => newName(s.name)),
        });
      }
    }
  });
  return layout;
}

/** Host side of a compiled step: holds params and optimizer state, feeds them and takes the new values back. */
export class TrainStepRunner {
  readonly values = new Map<string, Float32Array>();
  stepCount = 0;

  constructor(
    private session: Session,
    readonly layout: TrainStepLayout,
    init: Record<string, Float32Array>,
  ) {
    for (const p of layout.params) {
      const v = init[p.name];
      check(v, 'LK_INVALID_ARGUMENT', `train step: no initial value for parameter "${p.name}"`);
      check(
        v.length === p.shape.reduce((a, b) => a * b, 1),
        'LK_SHAPE_MISMATCH',
        `train step: initial value of "${p.name}" has ${v.length} values, shape [${p.shape}] needs more or fewer`,
      );
      this.values.set(p.name, Float32Array.from(v));
      for (const s of p.state) this.values.set(s, new Float32Array(v.length));
    }
  }

  /** Runs one step with the batch feeds; returns the metrics (loss, grad_norm, ...). */
  async step(batch: Record<string, Feed>, lr: number): Promise<Record<string, number>> {
    this.stepCount++;
    const feeds: Record<string, Feed> = {
      ...batch,
      lr: new Float32Array([lr]),
      step: new Float32Array([this.stepCount]),
    };
    for (const [k, v] of this.values) feeds[k] = v;
    const out: Record<string, HostTensor> = await this.session.run(feeds);
    for (const p of this.layout.params) {
      this.values.set(p.name, out[p.out].data as Float32Array);
      p.state.forEach((s, j) => this.values.set(s, out[p.stateOut[j]].data as Float32Array));
    }
    return Object.fromEntries(this.layout.metrics.map((m) => [m, Number(out[m].data[0])]));
  }

  /** The current value of a parameter. */
  param(name: string): Float32Array {
    const v = this.values.get(name);
    check(v, 'LK_INVALID_ARGUMENT', `train step: unknown parameter "${name}"`);
    return v;
  }
}
