/**
 * CLoRA's contrastive loss on cross-attention maps ("CLoRA: A Contrastive Approach to Compose Multiple
 * LoRA Models", arXiv:2403.19776; official pipeline_clora.py `loss_fn`): every concept token's map in every prompt
 * becomes one embedding, e = minmax(flatten(M_p[:, :, τ])), labelled by its concept; the loss is NT-Xent over those
 * embeddings (pytorch-metric-learning's NTXentLoss, temperature 0.5 in the official code): maps of the same concept
 * in different prompts are pulled together, maps of different concepts pushed apart. Built from graph ops, so
 * autodiff takes its gradient through the maps and the U-Net to the latent (diffusion/clora-graph.ts).
 * Not here: the maps (models/unet-attention-maps.ts), the latent update and the mask fusion (clora.ts).
 */
import { LorakitError } from '../errors.ts';
import type { Tensor } from '../graph/index.ts';

/** One token of one prompt: prompt index p (into the pass list) and position τ in its states. */
export interface ConceptToken {
  prompt: number;
  token: number;
}

/**
 * The concept groups, official `important_token_indices` regrouped: concepts[c] lists the tokens of concept c, over
 * every prompt that names it. Embeddings of one concept are positives of each other; of two concepts, negatives.
 */
export type ConceptGroups = readonly (readonly ConceptToken[])[];

/**
 * NT-Xent as pytorch-metric-learning 2.9 computes it with its default cosine similarity and mean reducer: rows of
 * `emb` [E, D] are L2-normalised (F.normalize, eps 1e-12), s_ij = cos(e_i, e_j); every ordered positive pair (a, p),
 * a ≠ p with one label, gives −log(exp(s_ap/τ) / (exp(s_ap/τ) + Σ_{n: label ≠ label_a} exp(s_an/τ))); the loss is
 * their mean, and 0 when there is no positive pair or no negative pair at all. The library's max-shift before exp and
 * its 1e-38 inside the log are left out: cosines are in [−1, 1], so exp(s/τ) cannot overflow for τ ≥ 0.01.
 */
export function ntXentLoss(emb: Tensor, labels: readonly number[], temperature: number): Tensor {
  const E = labels.length;
  if (emb.rank !== 2 || emb.shape[0] !== E)
    throw new LorakitError('LK_SHAPE_MISMATCH', `ntXentLoss: embeddings ${emb} need [${E}, D], one row per label`);
  if (!(temperature > 0))
    throw new LorakitError('LK_INVALID_ARGUMENT', `ntXentLoss: temperature must be > 0, got ${temperature}`);
  const pos = new Float64Array(E * E);
  const neg = new Float64Array(E * E);
  for (let a = 0; a < E; a++)
    for (let b = 0; b < E; b++) {
      if (a !== b && labels[a] === labels[b]) pos[a * E + b] = 1;
      if (labels[a] !== labels[b]) neg[a * E + b] = 1;
    }
  const nPos = pos.reduce((s, v) => s + v, 0);
  const g = emb.graph;
  if (nPos === 0 || !neg.some((v) => v > 0)) return g.scalar(0, emb.dtype).add(emb.sum().mul(0)); // pml's zero loss
  const norm = emb.mul(emb).sum(1, true).sqrt().maximum(1e-12); // [E, 1]
  const unit = emb.div(norm); // [E, D]
  const scaled = unit.matmul(unit.T).div(temperature); // [E, E]: s_ij / τ
  const z = scaled.exp(); // [E, E]
  const negSum = z.mul(g.constant(neg, emb.dtype, [E, E])).sum(1, true); // [E, 1]: Σ_n exp(s_an/τ)
  // −log(z_ap / (z_ap + N_a)) = log(z_ap + N_a) − s_ap/τ, on the positive pairs only
  const perPair = z.add(negSum).log().sub(scaled); // [E, E]
  return perPair
    .mul(g.constant(pos, emb.dtype, [E, E]))
    .sum()
    .div(nPos);
}

/** (v − min v) / (max v − min v) over each row of v [E, D] (official loss_fn's per-map min-max scaling). */
export function minMaxRows(v: Tensor): Tensor {
  const lo = v.neg().max(1, true).neg(); // [E, 1]
  return v.sub(lo).div(v.max(1, true).sub(lo)); // [E, D]
}

/**
 * The embeddings of CLoRA's loss: for each concept c and each of its tokens (p, τ), the min-max scaled, flattened map
 * maps[p][:, :, τ] (maps[p] [h, w, L], prompt p's map averaged over layers, heads and batch), with label c.
 */
export function cloraEmbeddings(maps: readonly Tensor[], concepts: ConceptGroups): { emb: Tensor; labels: number[] } {
  const rows: Tensor[] = [];
  const labels: number[] = [];
  concepts.forEach((tokens, c) => {
    for (const { prompt, token } of tokens) {
      const m = maps[prompt];
      const L = m?.shape[2];
      if (m?.rank !== 3 || typeof L !== 'number' || token < 0 || token >= L)
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          `CLoRA concept ${c}: token ${token} of prompt ${prompt} is not in the maps (${maps.length} prompts, ` +
            `maps ${m ?? 'absent'})`,
        );
      rows.push(m.slice([token], [token + 1], [2]).reshape([1, -1])); // [1, h·w]
      labels.push(c);
    }
  });
  if (!rows.length) throw new LorakitError('LK_INVALID_ARGUMENT', 'CLoRA: the concept groups name no token');
  const emb = rows.length === 1 ? rows[0] : rows[0].graph.concat(rows, 0); // [E, h·w]
  return { emb: minMaxRows(emb), labels };
}

/** CLoRA's loss on per-prompt maps [h, w, L]: NT-Xent over the concept tokens' min-max scaled maps. */
export function cloraLoss(maps: readonly Tensor[], concepts: ConceptGroups, temperature = 0.5): Tensor {
  const { emb, labels } = cloraEmbeddings(maps, concepts);
  return ntXentLoss(emb, labels, temperature);
}
