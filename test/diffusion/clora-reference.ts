// Host float64 references for the CLoRA tests, written from the definitions (not from the graph code): NT-Xent as
// pytorch-metric-learning's NTXentLoss defines it (cosine similarity, mean over ordered positive pairs), the
// per-token masks and the masked fusion of official pipeline_clora.py (attention_map_to_mask, the guidance lines).
import type { ConceptGroups } from '../../src/diffusion/index.ts';

/** NT-Xent of rows `emb` with `labels` at temperature `tau`. */
export function hostNtXent(emb: number[][], labels: number[], tau: number): number {
  const unit = emb.map((r) => {
    const n = Math.max(Math.sqrt(r.reduce((a, v) => a + v * v, 0)), 1e-12);
    return r.map((v) => v / n);
  });
  const cos = (a: number, b: number) => unit[a].reduce((s, v, i) => s + v * unit[b][i], 0);
  let sum = 0;
  let count = 0;
  let negatives = 0;
  for (let a = 0; a < emb.length; a++) for (let b = 0; b < emb.length; b++) if (labels[a] !== labels[b]) negatives++;
  for (let a = 0; a < emb.length; a++)
    for (let p = 0; p < emb.length; p++) {
      if (p === a || labels[p] !== labels[a]) continue;
      let denom = Math.exp(cos(a, p) / tau);
      for (let n = 0; n < emb.length; n++) if (labels[n] !== labels[a]) denom += Math.exp(cos(a, n) / tau);
      sum += -Math.log(Math.exp(cos(a, p) / tau) / denom);
      count++;
    }
  return count && negatives ? sum / count : 0;
}

/** CLoRA's loss on maps [h, w, L] per prompt: min-max scaled token maps as embeddings, NT-Xent over concepts. */
export function hostCloraLoss(
  maps: ArrayLike<number>[],
  [h, w, L]: readonly number[],
  concepts: ConceptGroups,
  tau: number,
): number {
  const emb: number[][] = [];
  const labels: number[] = [];
  concepts.forEach((tokens, c) => {
    for (const { prompt, token } of tokens) {
      const v = Array.from({ length: h * w }, (_, i) => maps[prompt][i * L + token]);
      const [lo, hi] = [Math.min(...v), Math.max(...v)];
      emb.push(v.map((x) => (x - lo) / (hi - lo)));
      labels.push(c);
    }
  });
  return hostNtXent(emb, labels, tau);
}
