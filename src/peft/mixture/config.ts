/**
 * The configuration of a LoRA mixture (mixture_config.json, or the `mixture:` section of a YAML run): which method
 * (ReMix or LoRA-Mixer), the expert stack (n experts of rank r on the targeted modules), the routing (top-k, M sampled
 * routings, the scale), LoRA-Mixer's routing-specialisation loss and its two stages. Strict: an unknown key is an
 * error naming it. Not here: the graphs (remix.ts, lora-mixer.ts), the values (model.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';

const common = {
  /** Module-name suffixes carrying experts (`gate_proj`); ReMix defaults to the FFN, LoRA-Mixer to attention. */
  target_modules: z.array(z.string()).min(1).optional(),
  /** Experts per targeted module (n in ReMix, E in LoRA-Mixer). */
  num_experts: z.number().int().min(1).default(4),
  /** Rank of each expert LoRA. */
  r: z.number().int().min(1).default(4),
  /** Experts active per token (k). */
  top_k: z.number().int().min(1).default(2),
  /** Std of the router's Gaussian init (ReMix's Theorem 1 assumes a Gaussian router). */
  router_init_std: z.number().min(0).default(0.02),
  /** Seed of the expert and router initialisation. */
  seed: z.number().int().default(0),
};

/** ReMix (arXiv 2603.10160): k experts of constant weight ω, the router trained by RLOO over M routings. */
export const remixSchema = z
  .object({
    method: z.literal('remix'),
    ...common,
    /** ω = lora_alpha/(k·r) ("lora", the paper's 2/(k·r) at alpha 2) or lora_alpha/√(k·r) ("rslora"). */
    omega: z.enum(['lora', 'rslora']).default('lora'),
    lora_alpha: z.number().positive().default(2),
    /** Sampled routings per input (M ≥ 2 for the leave-one-out baseline). */
    samples: z.number().int().min(2).default(4),
    /** Whether the expert LoRAs train (the paper trains them) or stay frozen (plugged-in pool LoRAs). */
    train_experts: z.boolean().default(true),
    /** Whether the router trains. */
    train_router: z.boolean().default(true),
  })
  .strict();

/** LoRA-Mixer (arXiv 2507.00029): routed experts in the attention projections, hard then soft top-k routing. */
export const loraMixerSchema = z
  .object({
    method: z.literal('lora_mixer'),
    ...common,
    /** Each expert's scale is lora_alpha / r. */
    lora_alpha: z.number().positive().default(8),
    /** α of the load-balance product Σ p̄ᵢ·f̄ᵢ. */
    rsl_alpha: z.number().min(0).default(0.01),
    /** λ of the entropy term. */
    rsl_lambda: z.number().min(0).default(0.01),
    /**
     * '+': RSL = α·Σ p̄f̄ + λ·H̄ (entropy penalised: peaky, specialised routing, the paper's stated intent; default);
     * '-': RSL = α·Σ p̄f̄ − λ·H̄ (the formula as printed, which pushes routing towards uniform).
     */
    entropy_sign: z.enum(['+', '-']).default('+'),
    /** Whether the experts keep training in stage 2 (router training); frozen by default. */
    train_experts_stage2: z.boolean().default(false),
  })
  .strict();

/** Either mixture. */
export const mixtureSchema = z.discriminatedUnion('method', [remixSchema, loraMixerSchema]);

/** A parsed ReMix config. */
export type RemixConfig = z.output<typeof remixSchema>;
/** A parsed LoRA-Mixer config. */
export type LoraMixerConfig = z.output<typeof loraMixerSchema>;
/** A parsed mixture config. */
export type MixtureConfig = z.output<typeof mixtureSchema>;

/** The default targets: ReMix's FFN (paper §3.1), LoRA-Mixer's attention projections (Q/K/V/O). */
export function defaultTargets(method: MixtureConfig['method']): string[] {
  return method === 'remix' ? ['gate_proj', 'up_proj', 'down_proj'] : ['q_proj', 'k_proj', 'v_proj', 'o_proj'];
}

/** Parses and checks a mixture config; `source` names the file or section in errors. */
export function parseMixtureConfig(raw: unknown, source: string): MixtureConfig {
  const r = mixtureSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `${source}: ${issue.path.join('.') || '(root)'}: ${issue.message}` +
        (issue.code === 'unrecognized_keys' ? ` (${issue.keys.join(', ')})` : ''),
    );
  }
  const c = r.data;
  if (c.top_k > c.num_experts)
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `${source}: top_k ${c.top_k} must not exceed num_experts ${c.num_experts}`,
    );
  return { ...c, target_modules: c.target_modules ?? defaultTargets(c.method) };
}

/** The constant weight of each active expert: ReMix's ω, or LoRA-Mixer's per-expert scale α/r. */
export function expertScale(c: MixtureConfig): number {
  if (c.method === 'lora_mixer') return c.lora_alpha / c.r;
  const kr = c.top_k * c.r;
  return c.omega === 'lora' ? c.lora_alpha / kr : c.lora_alpha / Math.sqrt(kr);
}

/** Whether a module path is targeted (its last name component is one of target_modules). */
export function isTargeted(c: MixtureConfig, path: string): boolean {
  const last = path.slice(path.lastIndexOf('.') + 1);
  return (c.target_modules ?? defaultTargets(c.method)).includes(last);
}
