/**
 * Cross-attention maps out of the UNet2DConditionModel graph: for chosen layers (typed handles from
 * crossAttentionLayers), softmax(QKᵀ/√hd) averaged over heads and laid out on the layer's grid, [N, h, w, L]: how
 * much each position of the latent attends to each token of the states. The maps are ordinary graph tensors, so a
 * loss on them differentiates through the whole U-Net (CLoRA's latent update, diffusion/clora-loss.ts).
 * Not here: the U-Net itself (unet-cond.ts), anything CLoRA-specific.
 */
import { LorakitError } from '../errors.ts';
import type { Tensor } from '../graph/index.ts';
import type { ModelContext } from '../nn/index.ts';
import {
  type CrossAttentionLayer,
  type UNet2DConditionConfig,
  crossAttentionLayers,
  sameCrossAttentionLayer,
  unet2dCondition,
} from './unet-cond.ts';

/** One layer's map: its handle and the head-averaged probabilities [N, h, w, L]. */
export interface CrossAttentionMap {
  layer: CrossAttentionLayer;
  map: Tensor;
}

/** Which layers to read: a list of handles, or a predicate over every layer (e.g. `(l) => l.downscale === 2`). */
export type LayerSelection = readonly CrossAttentionLayer[] | ((layer: CrossAttentionLayer) => boolean);

/** The handles a selection picks out of a config, in forward order; throws when it picks none or an unknown one. */
export function selectLayers(c: UNet2DConditionConfig, select: LayerSelection): CrossAttentionLayer[] {
  const all = crossAttentionLayers(c);
  if (typeof select !== 'function') {
    for (const l of select)
      if (!all.some((a) => sameCrossAttentionLayer(a, l)))
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          `attention maps: no cross-attention layer ${l.place} block ${l.block}, attention ${l.attention}, layer ` +
            `${l.layer} in this U-Net; it has ${all.map((a) => a.path).join(', ') || 'none'}`,
        );
  }
  const picked = all.filter((l) =>
    typeof select === 'function' ? select(l) : select.some((s) => sameCrossAttentionLayer(s, l)),
  );
  if (!picked.length)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `attention maps: the selection picks no cross-attention layer; this U-Net has ${all.length} ` +
        `(${all.map((a) => `${a.path} at 1/${a.downscale}`).join(', ') || 'none'})`,
    );
  return picked;
}

/**
 * The U-Net's noise prediction [N, out, H, W] for sample [N, in, H, W] and the head-averaged cross-attention maps of
 * the selected layers, each [N, H/downscale, W/downscale, L], in forward order.
 */
export function unet2dConditionWithMaps(
  ctx: ModelContext<UNet2DConditionConfig>,
  sample: Tensor,
  timestep: Tensor,
  states: Tensor,
  select: LayerSelection,
): { noise: Tensor; maps: CrossAttentionMap[] } {
  const [H, W] = [sample.shape[2], sample.shape[3]];
  if (typeof H !== 'number' || typeof W !== 'number')
    throw new LorakitError('LK_SHAPE_MISMATCH', `attention maps: the sample needs a static H and W, got ${sample}`);
  const wanted = selectLayers(ctx.config, select);
  const maps: CrossAttentionMap[] = [];
  const noise = unet2dCondition(ctx, sample, timestep, states, (layer, probs) => {
    if (!wanted.some((l) => sameCrossAttentionLayer(l, layer))) return;
    const [h, w] = [H / layer.downscale, W / layer.downscale];
    maps.push({ layer, map: probs.mean(1).reshape([0, h, w, -1]) }); // [N, heads, h·w, L] → [N, h, w, L]
  });
  return { noise, maps };
}

/**
 * The mean of maps that share one grid, [N, h, w, L]: diffusers-side attention stores (Attend-and-Excite's, CLoRA's
 * aggregate_attention) average every selected layer and head at one resolution the same way.
 */
export function averageMaps(maps: readonly CrossAttentionMap[]): Tensor {
  if (!maps.length) throw new LorakitError('LK_INVALID_ARGUMENT', 'averageMaps: no maps');
  const s = maps[0].map.shape;
  for (const m of maps)
    if (m.map.shape.some((d, i) => d !== s[i]))
      throw new LorakitError(
        'LK_SHAPE_MISMATCH',
        `averageMaps: ${m.layer.path} gives ${m.map} but ${maps[0].layer.path} gives ${maps[0].map}; select ` +
          'layers of one resolution (one downscale)',
      );
  const sum = maps.slice(1).reduce((a, m) => a.add(m.map), maps[0].map);
  return maps.length === 1 ? sum : sum.div(maps.length); // [N, h, w, L]
}
