// The optimizer interface: an update rule written as graph ops, with per-parameter state tensors that enter the
// step graph as inputs and leave it as outputs (so state lives on the host between steps).
import type { Tensor } from '../graph/index.ts';

export interface UpdateContext {
  param: Tensor;
  grad: Tensor;
  /** This parameter's state tensors, in the order of `stateSlots`. */
  state: Tensor[];
  /** Learning rate for this parameter (the step's lr times its group's ratio). */
  lr: Tensor;
  /** 1-based step number, as f32. */
  step: Tensor;
  /** Weight decay for this parameter's group. */
  weightDecay: number;
}

export interface Optimizer {
  readonly name: string;
  /** Names of the state tensors each parameter carries (e.g. ['m', 'v'] for AdamW); initialised to zeros. */
  readonly stateSlots: readonly string[];
  update(ctx: UpdateContext): { param: Tensor; state: Tensor[] };
}
