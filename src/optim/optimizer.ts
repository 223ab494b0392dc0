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
  /** This group's host-computed scalars (see Optimizer.scalars), as f32 scalar graph inputs. */
  scalars: Record<string, Tensor>;
}

/** What the host knows when it computes a group's scalars for one step. */
export interface ScalarContext {
  /** The optimizer step being taken, 1-based. */
  step: number;
  /** This group's learning rate for the step (the schedule's lr times the group's ratio, in float64). */
  lr: number;
  weightDecay: number;
}

export interface Optimizer {
  readonly name: string;
  /** Names of the state tensors each parameter carries (e.g. ['m', 'v'] for AdamW); initialised to zeros. */
  readonly stateSlots: readonly string[];
  /**
   * The hyperparameters the update depends on (AdamW's betas and eps), recorded in checkpoints so that resuming
   * with other values is noticed; two optimizers with equal names and settings update alike.
   */
  readonly settings?: Readonly<Record<string, number | boolean>>;
  /**
   * Scalars the host computes in float64 for each group and step, fed as f32 graph inputs: what PyTorch computes in
   * Python floats (AdamW's bias corrections and step size), so the graph rounds them once, as torch does.
   */
  scalars?(ctx: ScalarContext): Record<string, number>;
  /**
   * The update reads each element of param, grad and state alone (with the group's scalars), so the step may update
   * a group's parameters of equal trailing dimensions as one tensor joined along axis 0 (step.ts): the same values,
   * in a few nodes instead of a dozen per parameter.
   */
  readonly elementwise?: boolean;
  update(ctx: UpdateContext): { param: Tensor; state: Tensor[] };
}
