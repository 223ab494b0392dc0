/**
 * The distillation loss of Trans-LoRA's last step as lorakit builds it: the mean, over counted positions, of the
 * KL divergence KL(p_teacher ‖ p_student) between the teacher's and the student's next-token distributions. The
 * teacher (source base + source LoRA) runs first, on the host side of the step, and its log-probabilities are fed
 * to the student's train graph as an input; the tokenizers of the two bases are shared, so both distributions are
 * over one vocabulary. The paper fine-tunes the student on the teacher's outputs with the standard SFT loss
 * (sequence-level); this is the logit-level variant the task asks for, which carries the whole distribution per
 * position rather than one sampled token. Not here: computing the teacher's log-probabilities (log-probs.ts), the
 * orchestration (trans-lora.ts).
 */
import { LorakitError } from '../../errors.ts';
import { logSoftmax, type Tensor } from '../../graph/index.ts';

/** The scalar loss and its parts. */
export interface DistillLoss {
  /** Σ_n w_n · KL_n / max(1, Σ_n w_n). */
  loss: Tensor;
  /** Σ_n w_n · KL_n and Σ_n w_n (exact means over many batches). */
  klSum: Tensor;
  count: Tensor;
}

/**
 * KL(p_t ‖ p_s) per position from student logits [N, V] and teacher log-probabilities [N, V], weighted by `weight`
 * [N] (1 = counted, 0 = padding), averaged over the counted positions.
 * Gradient (autodiff does it): ∂KL_n/∂z_n = softmax(z_n) − p_t,n, because KL_n = Σ_v p_t,v·(log p_t,v − z_v) +
 * logΣexp(z) and the teacher term is constant.
 */
export function distillKl(studentLogits: Tensor, teacherLogp: Tensor, weight: Tensor): DistillLoss {
  if (studentLogits.rank !== 2 || teacherLogp.rank !== 2 || weight.rank !== 1)
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `distillKl: expects student logits [N, V], teacher log-probs [N, V] and weights [N], got ` +
        `${studentLogits.toString()}, ${teacherLogp.toString()} and ${weight.toString()}`,
    );
  const ls = logSoftmax(studentLogits); // [N, V]
  const lt = teacherLogp.detach(); // [N, V], fed: no gradient
  const kl = lt.exp().mul(lt.sub(ls)).sum(-1); // [N]
  const klSum = kl.mul(weight).sum();
  const count = weight.sum();
  return { loss: klSum.div(count.maximum(1)), klSum, count };
}

/** The same quantity on the host in float64: a reference for tests and for reports (teacher log-probs given). */
export function distillKlHost(
  studentLogits: ArrayLike<number>,
  teacherLogp: ArrayLike<number>,
  weight: ArrayLike<number>,
  V: number,
): number {
  let sum = 0,
    count = 0;
  for (let n = 0; n < weight.length; n++) {
    if (weight[n] === 0) continue;
    let m = -Infinity;
    for (let v = 0; v < V; v++) m = Math.max(m, studentLogits[n * V + v]);
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(studentLogits[n * V + v] - m);
    const lse = m + Math.log(z);
    let kl = 0;
    for (let v = 0; v < V; v++) {
      const lt = teacherLogp[n * V + v];
      kl += Math.exp(lt) * (lt - (studentLogits[n * V + v] - lse));
    }
    sum += weight[n] * kl;
    count += weight[n];
  }
  return sum / Math.max(1, count);
}
