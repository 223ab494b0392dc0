/**
 * The graphs CLoRA runs each denoising step: the U-Net once per pass (a prompt with its LoRA, or the base model for
 * the background), every pass reading the same latent input, with the noise predictions and each pass's aggregated
 * cross-attention map as outputs; the gradient graph adds CLoRA's contrastive loss on the maps and its gradient with
 * respect to the LATENT, built by lorakit's autodiff through every pass of the U-Net (ONNX Runtime's training API
 * differentiates only with respect to weights). One graph for all passes: each pass's weights under its own name
 * prefix (file-backed weights stay one mapping of the file), its adapter bound through its own hooks.
 * Not here: the loss (clora-loss.ts), the latent update, masks and fusion (clora.ts).
 */
import { LorakitError } from '../errors.ts';
import { Graph, type Tensor, grad } from '../graph/index.ts';
import {
  type ContextOptions,
  type LayerSelection,
  type UNet2DConditionConfig,
  averageMaps,
  unet2dConditionWithMaps,
} from '../models/index.ts';
import type { ComputeDType, ModelContext, ModuleHooks } from '../nn/index.ts';
import type { PeftModel } from '../peft/index.ts';
import { type ConceptGroups, cloraLoss } from './clora-loss.ts';

/** A UNet2DConditionModel to build graphs of (loadUNetCondition's folder, or any source with these two members). */
export interface CondUNetSource {
  config: UNet2DConditionConfig;
  context(graph: Graph, opts?: ContextOptions): ModelContext<UNet2DConditionConfig>;
}

/** An adapter as a pass applies it: per-graph module hooks and in-memory weights (PeftModel.generationAdapter()). */
export interface PassAdapter {
  hooks: () => ModuleHooks;
  overrides?: ReadonlyMap<string, Float32Array>;
}

/**
 * Adapter `name` of `peft` alone, as a pass applies it. The hooks make it the active adapter when a graph binds them
 * (a PeftModel binds whatever is active at that moment), so several passes can share one PeftModel.
 */
export function passAdapter(peft: PeftModel, name: string): PassAdapter {
  const only = () => peft.setActive(name);
  only();
  const overrides = peft.weightOverrides();
  return {
    hooks: () => {
      only();
      return peft.hooks();
    },
    overrides,
  };
}

/** One pass of CLoRA: a prompt's states with the LoRA that draws it (official lora_list[p], prompt_embeds_list[p]). */
export interface CloraPass {
  /** The prompt's encoder_hidden_states [L, D]. */
  states: Float32Array;
  /** Its LoRA; null: the base model (the official background entry ""). */
  adapter: PassAdapter | null;
  /** Tokens whose maps form this pass's mask (official mask_indices[p]); empty for the background pass. */
  maskTokens: readonly number[];
}

/** What the CLoRA graphs are built from. */
export interface CloraGraphOptions {
  unet: CondUNetSource;
  passes: readonly CloraPass[];
  /** Latent shape of one image [C, H, W]. */
  latent: readonly [number, number, number];
  /** Unconditional states [L, D]: every pass then runs the batch [uncond, cond], as with classifier-free guidance. */
  uncond?: Float32Array;
  /** The layers whose maps are averaged (one resolution). */
  layers: LayerSelection;
  concepts: ConceptGroups;
  temperature: number;
  /** Compute dtype (f64 for gradient checks; ORT's Conv has no f64 kernel, so `wrapHooks` must supply one). */
  dtype?: ComputeDType;
  /** Wraps each pass's module hooks (tests compute convolutions in f64 through it). */
  wrapHooks?: (hooks: ModuleHooks) => ModuleHooks;
}

/** Tokens L and width D of the states, checked against the U-Net's cross_attention_dim. */
function statesShape(o: CloraGraphOptions): [number, number] {
  const D = o.unet.config.cross_attention_dim;
  const n = o.passes[0]?.states.length ?? 0;
  if (!o.passes.length || n % D)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `CLoRA: ${o.passes.length} passes; the first one's states have ${n} values, not a multiple of ` +
        `cross_attention_dim ${D}`,
    );
  const L = n / D;
  o.passes.forEach((p, i) => {
    if (p.states.length !== L * D)
      throw new LorakitError(
        'LK_SHAPE_MISMATCH',
        `CLoRA pass ${i}: states have ${p.states.length} values, need ${L}×${D}`,
      );
  });
  if (o.uncond && o.uncond.length !== L * D)
    throw new LorakitError('LK_SHAPE_MISMATCH', `CLoRA: uncond states have ${o.uncond.length} values, need ${L}×${D}`);
  return [L, D];
}

/**
 * Builds the passes over graph inputs `latent` [1, C, H, W] and `timestep` [1]: outputs `noise{p}` [B, C, H, W]
 * (B = 2 with uncond: rows [uncond, cond]) and `map{p}` [h, w, L] (the selected layers, heads and the B rows
 * averaged: official aggregate_attention). With `withGradient`, also `loss` and `grad` [1, C, H, W] = ∂loss/∂latent.
 */
export function buildCloraGraph(o: CloraGraphOptions, withGradient: boolean): Graph {
  const [L, D] = statesShape(o);
  const dtype = o.dtype ?? 'f32';
  const g = new Graph(withGradient ? 'clora-gradient' : 'clora-passes');
  const latent = g.input('latent', dtype, [1, ...o.latent]);
  const timestep = g.input('timestep', dtype, [1]);
  const B = o.uncond ? 2 : 1;
  const sample = B === 2 ? g.concat([latent, latent], 0) : latent; // [B, C, H, W]
  const t = B === 2 ? g.concat([timestep, timestep], 0) : timestep; // [B]
  const maps: Tensor[] = [];
  o.passes.forEach((p, i) => {
    const rows = o.uncond ? [o.uncond, p.states] : [p.states];
    const states = g.constant(Float64Array.from(rows.flatMap((r) => Array.from(r))), dtype, [B, L, D]); // [B, L, D]
    const hooks = p.adapter?.hooks() ?? {};
    const ctx = o.unet.context(g, {
      hooks: o.wrapHooks ? o.wrapHooks(hooks) : hooks,
      overrides: p.adapter?.overrides,
      dtype,
      namePrefix: `pass${i}.`,
    });
    const r = g.scope(`pass${i}`, () => unet2dConditionWithMaps(ctx, sample, t, states, o.layers));
    const map = averageMaps(r.maps).mean(0); // [h, w, L]
    g.output(`noise${i}`, r.noise);
    g.output(`map${i}`, map);
    maps.push(map);
  });
  if (withGradient) {
    const loss = cloraLoss(maps, o.concepts, o.temperature);
    g.output('loss', loss);
    g.output('grad', grad(loss, [latent])[0]); // [1, C, H, W]
  }
  return g;
}
