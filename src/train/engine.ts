/**
 * The compiled step(s) of a run and the host copy of parameters and optimizer state. One optimizer step consumes
 * k micro-batches:
 *
 * - k = 1: one fused graph (forward, backward, clip, update: `addTrainStep`), one `session.run` per step.
 * - k > 1: a gradient graph run once per micro-batch, which adds the scaled gradient into an accumulator in the
 *   graph (`acc' = acc + (wᵢ/W)·gᵢ`, wᵢ the micro-batch's loss-term count, W their sum), then a small apply graph
 *   (clip + update, no model weights) run once. For a mean loss, Σ (wᵢ/W)·gᵢ is exactly the gradient of the mean
 *   over the concatenated batch, so the update equals one step on that batch (up to float summation order).
 *
 * Why not one fused graph for the last micro-batch: it would compile the whole model twice, and ORT keeps a copy of
 * the frozen weights per session; the apply graph holds only adapter-sized tensors, and its extra run costs
 * microseconds next to a forward/backward. The apply graph reuses `addTrainStep` with the surrogate objective
 * Σₚ sum(p ⊙ Gₚ), whose gradient with respect to p is exactly the fed accumulator Gₚ (dL/dp = 1·Gₚ, no rounding),
 * so clipping and every optimizer go through the one code path the fused step uses.
 */
import { LorakitError, check } from '../errors.ts';
import { Graph, grad, type Tensor } from '../graph/index.ts';
import {
  addTrainStep,
  newName,
  stateName,
  TrainStepRunner,
  type Optimizer,
  type ParamGroup,
  type TrainStepLayout,
} from '../optim/index.ts';
import { compile, type CompileOptions, type Feed, type Session } from '../runtime/index.ts';
import type { TaskGraph, TaskParamGroup, TrainTask } from './task.ts';

/** How the step graph is built from the task. */
export interface EngineOptions {
  optimizer: Optimizer;
  /** Micro-batches per optimizer step (≥ 1). */
  accumulation: number;
  clipNorm?: number;
  /** Default weight decay for groups that set none. */
  weightDecay: number;
  /** Multiplies the lr ratio of groups marked `loraplusB`. */
  loraplusLrRatio?: number;
  /** With loraplusLrRatio, the weight decay of groups that set none (PEFT's loraplus_weight_decay; default 0). */
  loraplusWeightDecay?: number;
  compile?: CompileOptions;
}

/** One micro-batch as the engine runs it: all feeds and its weight. */
export interface MicroBatch {
  feeds: Record<string, Feed>;
  weight: number;
}

/** What one optimizer step reports; `micro` holds each micro-batch's loss (to locate a non-finite one). */
export interface StepOutput {
  loss: number;
  grad_norm: number;
  metrics: Record<string, number>;
  micro: number[];
}

/** Maps task groups onto optimizer groups, applying the default weight decay and the LoRA+ ratio. */
export function optimizerGroups(
  groups: readonly TaskParamGroup[],
  opts: Pick<EngineOptions, 'weightDecay' | 'loraplusLrRatio' | 'loraplusWeightDecay'>,
  params = (t: Tensor) => t,
): ParamGroup[] {
  return groups.map((g) => {
    check(g.params.length > 0, 'LK_INVALID_ARGUMENT', `train task: parameter group "${g.name}" is empty`);
    const ratio = (g.lrRatio ?? 1) * (g.loraplusB && opts.loraplusLrRatio !== undefined ? opts.loraplusLrRatio : 1);
    // ratio 0 freezes a group that must stay a graph input (FFA-LoRA's shared A): its update is p − 0·(…) = p
    check(
      Number.isFinite(ratio) && ratio >= 0,
      'LK_INVALID_ARGUMENT',
      `train task: group "${g.name}" has lr ratio ${ratio}; it must be ≥ 0 (0 freezes the group)`,
    );
    const decay = opts.loraplusLrRatio !== undefined ? (opts.loraplusWeightDecay ?? 0) : opts.weightDecay;
    return { params: g.params.map(params), lrRatio: ratio, weightDecay: g.weightDecay ?? decay };
  });
}

/** Compiled step graphs plus the host copy of parameters and optimizer state. */
export class StepEngine {
  private constructor(
    private readonly runner: TrainStepRunner,
    /** The graph the runner runs (the fused step, or the apply graph), for picking its feeds. */
    private readonly stepGraph: Graph,
    /** The gradient graph and its session (k > 1 only). */
    private readonly gradSession: Session | null,
    private readonly gradGraph: Graph | null,
    private readonly metricNames: string[],
  ) {}

  /** Builds and compiles the step graph(s) for `task`; parameters start at `init` (zeros without it, before a
   * restore()). */
  static async create(task: TrainTask, opts: EngineOptions, init?: Record<string, Float32Array>): Promise<StepEngine> {
    // the step graphs are the largest a run compiles, once per run: keep ORT's optimized model for the next run, but
    // not the session once the engine is disposed (its arena holds a step's activations, GBs on SmolLM2, and a
    // process that trains in turn would keep up to the Runtime's cache size of them; the disk entry reloads in seconds)
    const cOpts = { persistOptimized: true, retain: false, ...(opts.compile ?? task.compileOptions) };
    const tg = task.build();
    const metricNames = Object.keys(tg.metrics ?? {});
    const updates = tg.updates ?? [];
    // a task may have no optimizer groups when update rules claim every tensor (LoRA-Pro on every adapted layer)
    check(
      tg.groups.length > 0 || updates.length > 0,
      'LK_INVALID_ARGUMENT',
      'train task: build() returned no parameter groups and no update rules',
    );
    if (opts.accumulation === 1) {
      const layout = addTrainStep(tg.graph, tg.loss, {
        optimizer: opts.optimizer,
        groups: optimizerGroups(tg.groups, opts),
        updates: updates.map((u) => ({ ...u, weightDecay: u.weightDecay ?? opts.weightDecay })),
        clipNorm: opts.clipNorm,
        metrics: tg.metrics,
        buffers: tg.buffers,
      });
      const runner = new TrainStepRunner(await compile(tg.graph, cOpts), layout, init ?? zeros(layout));
      return new StepEngine(runner, tg.graph, null, null, metricNames);
    }
    const gradGraph = gradientGraph(tg);
    const gradSession = await compile(gradGraph, cOpts);
    const apply = new Graph(`${tg.graph.name}_apply`);
    const param = new Map<Tensor, Tensor>();
    let surrogate: Tensor | null = null;
    for (const p of [...tg.groups.flatMap((g) => g.params), ...updates.flatMap((u) => u.params)]) {
      const q = apply.input(p.name, 'f32', p.shape);
      const acc = apply.input(stateName(p.name, 'grad'), 'f32', p.shape);
      param.set(p, q);
      const term = q.mul(acc).sum(); // d/dq = acc exactly
      surrogate = surrogate ? surrogate.add(term) : term;
    }
    // buffers pass through the apply graph unchanged, so the runner holds them; the gradient graph updates them
    const buffers = (tg.buffers ?? []).map((b) => {
      const held = apply.input(b.input.name, 'f32', b.input.shape);
      return { input: held, next: held };
    });
    const layout = addTrainStep(apply, surrogate!, {
      buffers,
      optimizer: opts.optimizer,
      groups: optimizerGroups(tg.groups, opts, (t) => param.get(t)!),
      updates: updates.map((u) => ({
        ...u,
        params: u.params.map((t) => param.get(t)!),
        weightDecay: u.weightDecay ?? opts.weightDecay,
      })),
      clipNorm: opts.clipNorm,
    });
    const runner = new TrainStepRunner(await compile(apply, cOpts), layout, init ?? zeros(layout));
    return new StepEngine(runner, apply, gradSession, gradGraph, metricNames);
  }

  /** Frees the compiled sessions (a profiling session writes its trace then). */
  async dispose(): Promise<void> {
    await this.runner.dispose();
    await this.gradSession?.dispose();
  }

  /** Optimizer steps taken so far. */
  get step(): number {
    return this.runner.stepCount;
  }

  /** Names of the trainable parameters and buffers, in graph order. */
  paramNames(): string[] {
    return this.held().map((p) => p.name);
  }

  /** Current parameter and buffer values by name (the live host arrays; the engine replaces, never mutates, them). */
  params(): Map<string, Float32Array> {
    return new Map(this.held().map((p) => [p.name, this.runner.param(p.name)]));
  }

  private held() {
    return [...this.runner.layout.params, ...this.runner.layout.buffers];
  }

  /** Current optimizer and update-rule state by state name (`<param>::<slot>`). */
  optimizerState(): Map<string, Float32Array> {
    return new Map(this.runner.layout.state.map((s) => [s.name, this.runner.values.get(s.name)!]));
  }

  /** Shapes of the parameters and of the optimizer state, by name (what a checkpoint must hold). */
  shapes(): { params: Map<string, number[]>; state: Map<string, number[]> } {
    const { state } = this.runner.layout;
    return {
      params: new Map(this.held().map((p) => [p.name, p.shape])),
      state: new Map(state.map((s) => [s.name, s.shape])),
    };
  }

  /** Restores parameters, optimizer state and the step count (from a checkpoint already checked against shapes()). */
  restore(step: number, params: ReadonlyMap<string, Float32Array>, state: ReadonlyMap<string, Float32Array>): void {
    const { params: ps, state: ss } = this.shapes();
    for (const [names, from] of [
      [ps, params],
      [ss, state],
    ] as const) {
      for (const [name, shape] of names) {
        const v = from.get(name);
        const n = shape.reduce((a, b) => a * b, 1);
        if (!v || v.length !== n)
          throw new Error(`internal: restore: ${name} has ${v?.length ?? 'no'} values, expected ${n}`);
        this.runner.values.set(name, v);
      }
    }
    this.runner.stepCount = step;
  }

  /** One optimizer step over `micro` (1 … k micro-batches) at learning rate `lr`. */
  async run(micro: readonly MicroBatch[], lr: number): Promise<StepOutput> {
    check(micro.length > 0, 'LK_INVALID_ARGUMENT', 'train step: no micro-batches');
    if (!this.gradSession) {
      if (micro.length !== 1) throw new Error(`internal: the fused step takes one batch, got ${micro.length}`);
      const m = await this.runner.step(declared(this.stepGraph, micro[0].feeds), lr);
      const { loss, grad_norm, ...metrics } = m;
      return { loss, grad_norm, metrics, micro: [loss] };
    }
    const total = micro.reduce((a, b) => a + b.weight, 0);
    const names = this.runner.layout.params.map((p) => p.name);
    const buffers = this.runner.layout.buffers.map((b) => b.name);
    const acc = new Map<string, Float32Array>(names.map((n) => [n, new Float32Array(this.runner.param(n).length)]));
    const fetch = [
      'loss',
      ...this.metricNames,
      ...names.map((n) => newName(stateName(n, 'grad'))),
      ...buffers.map((n) => newName(n)),
    ];
    let loss = 0;
    const losses: number[] = [];
    const metrics: Record<string, number> = Object.fromEntries(this.metricNames.map((k) => [k, 0]));
    for (const mb of micro) {
      const feeds: Record<string, Feed> = {
        ...declared(this.gradGraph!, mb.feeds),
        grad_scale: new Float32Array([mb.weight / total]),
      };
      for (const n of names) {
        feeds[n] = this.runner.param(n);
        feeds[stateName(n, 'grad')] = acc.get(n)!;
      }
      for (const n of buffers) feeds[n] = this.runner.param(n);
      const out = await this.gradSession.run(feeds, fetch);
      for (const n of names) acc.set(n, out[newName(stateName(n, 'grad'))].data as Float32Array);
      for (const n of buffers) this.runner.values.set(n, out[newName(n)].data as Float32Array); // micro-batch order
      const l = Number(out.loss.data[0]);
      losses.push(l);
      loss += (mb.weight / total) * l;
      for (const k of this.metricNames) metrics[k] += (mb.weight / total) * Number(out[k].data[0]);
    }
    const grads = Object.fromEntries(names.map((n) => [stateName(n, 'grad'), acc.get(n)!]));
    // the apply graph also takes the per-step inputs of update rules (the same for every micro-batch of a step)
    const r = await this.runner.step({ ...declared(this.stepGraph, micro[0].feeds), ...grads }, lr);
    return { loss, grad_norm: r.grad_norm, metrics, micro: losses };
  }
}

/** The feeds `graph` declares an input for (a task's step inputs may serve only one of a step's graphs). */
function declared(graph: Graph, feeds: Record<string, Feed>): Record<string, Feed> {
  const names = new Set(graph.inputs.map((t) => t.name));
  return Object.fromEntries(Object.entries(feeds).filter(([k]) => names.has(k)));
}

function zeros(layout: TrainStepLayout): Record<string, Float32Array> {
  const held = [...layout.params, ...layout.buffers];
  return Object.fromEntries(held.map((p) => [p.name, new Float32Array(p.shape.reduce((a, b) => a * b, 1))]));
}

/** Forward + backward that adds this micro-batch's scaled gradient to a fed accumulator `<param>::grad`. */
function gradientGraph(tg: TaskGraph): Graph {
  const g = tg.graph;
  const params = [...tg.groups.flatMap((gr) => gr.params), ...(tg.updates ?? []).flatMap((u) => u.params)];
  for (const p of params) {
    if (p.kind !== 'input' || p.dtype !== 'f32' || !p.shape.every((d) => typeof d === 'number')) {
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `train task: parameter ${p.toString()} must be an f32 graph input with a static shape`,
      );
    }
  }
  check(tg.loss.rank === 0, 'LK_INVALID_ARGUMENT', `train task: the loss must be a scalar, got ${tg.loss.toString()}`);
  const scale = g.input('grad_scale', 'f32', []);
  const grads = grad(tg.loss, params);
  g.output('loss', tg.loss);
  for (const [k, t] of Object.entries(tg.metrics ?? {})) g.output(k, t);
  params.forEach((p, i) => {
    const acc = g.input(stateName(p.name, 'grad'), 'f32', p.shape);
    g.output(newName(stateName(p.name, 'grad')), acc.add(grads[i].mul(scale))); // [shape of p]
  });
  for (const b of tg.buffers ?? []) g.output(newName(b.input.name), b.next);
  return g;
}
