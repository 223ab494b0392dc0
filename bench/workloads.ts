/**
 * The benchmark workloads, shared by the lorakit runner (lorakit.ts) and the PEFT runner (interop/bench_peft.py,
 * which receives the same JSON spec), and the FLOP count used for model-FLOPs utilisation.
 * Not here: running them (lorakit.ts), orchestration (run.ts, peft.ts), the report (report.ts).
 */
import { parseModelConfig } from '../src/io/index.ts';
import { familyOf } from '../src/models/index.ts';
import type { GemmShape } from './gemm.ts';
import { CONFIGS, type ModelName } from './models.ts';

export type Targets = 'attn' | 'all';

/** One measurement, run in a fresh process so that its peak RSS is its own. */
export interface Workload {
  /** e.g. "train gpt2 attn"; the row label. */
  id: string;
  kind: 'train' | 'eval' | 'gen' | 'matmul' | 'gemm';
  model: ModelName;
  targets: Targets;
  /** LoRA rank (alpha = 2r, dropout 0). */
  rank: number;
  /** Rows per step (gen: prompts in the batch). */
  batch: number;
  /** Tokens per row (gen: prompt length). */
  seq: number;
  /** gen: new tokens per row. */
  newTokens: number;
  /** Untimed steps after the first one, then timed steps. */
  warmup: number;
  steps: number;
  /** Intra-op threads (ORT) / torch threads. */
  threads: number;
  /** matmul: the square size. */
  size?: number;
  /** matmul, PEFT side only: torch dtype of the product (default float32; bench/precision.ts asks for bfloat16). */
  dtype?: 'float32' | 'bfloat16';
  /** gemm: the model's Linear shapes, each timed forward and backward with batch·seq rows (gemm.ts). */
  shapes?: GemmShape[];
  /** lorakit only: extra compile options (optimization level, ORT session options) for experiments. */
  compile?: Record<string, unknown>;
  /**
   * lorakit only: the frozen base quantized (run setting `quantize`); the PEFT side runs its float32 base, so the
   * row compares an int8 lorakit step with PEFT's float32 one.
   */
  quantize?: 'int8' | 'q4';
  /** lorakit only, with `quantize`: the output head quantized too (run setting `quantize_head`). */
  quantizeHead?: boolean;
  /** PEFT only: "bf16" runs PEFT's forward under torch.autocast(cpu, bfloat16) (interop/bench_peft.py). */
  peftAutocast?: 'bf16';
  /** PEFT only: transformers' attn_implementation (default sdpa, transformers' own default). */
  peftAttention?: 'sdpa' | 'eager';
  /** Both sides: glibc malloc as it comes ('glibc'), or told to keep freed memory (default; bench/common.ts). */
  malloc?: Malloc;
}

/**
 * The allocator setting of both sides' processes. 'retain' (the default) runs them with glibc's malloc told never
 * to mmap and never to trim (GLIBC_TUNABLES), as jemalloc or tcmalloc would, which PyTorch's CPU tuning guides
 * recommend: torch frees and re-mallocs its activations every step, and glibc hands blocks over its mmap threshold
 * (at most 32 MB) back to the kernel, so each step page-faults fresh memory: PEFT took 197k–300k faults a step and
 * ran 1.17–1.89× slower (bench/RESULTS.md, "PEFT at its best keeps its memory"). lorakit's ORT arena keeps its
 * memory either way. 'glibc' is the library's default.
 */
export type Malloc = 'retain' | 'glibc';

/** One training step of bench:quant's shape (batch 4 × 256, r 16), for the tools that time or inspect a single
 * step (quant-cold.ts, saved-activations.ts). */
export function oneTrainStep(model: ModelName, targets: Targets, threads: number): Workload {
  const shape = { batch: 4, seq: 256, rank: 16, newTokens: 0, warmup: 0, steps: 1, threads };
  return { id: `train ${model} ${targets}`, kind: 'train', model, targets, ...shape };
}

/** PEFT target_modules for each shape: the attention projections, or every linear layer but the head. */
export function targetModules(model: ModelName, targets: Targets): string | string[] {
  if (targets === 'all') return 'all-linear';
  // GPT-2's attn.c_proj shares its name with mlp.c_proj, hence a full-match regex.
  return model === 'gpt2' ? String.raw`.*\.attn\.(c_attn|c_proj)` : ['q_proj', 'k_proj', 'v_proj', 'o_proj'];
}

/** The adapter_config both sides use. */
export function loraConfig(w: Pick<Workload, 'model' | 'targets' | 'rank'>): Record<string, unknown> {
  return {
    peft_type: 'LORA',
    r: w.rank,
    lora_alpha: 2 * w.rank,
    lora_dropout: 0,
    target_modules: targetModules(w.model, w.targets),
    fan_in_fan_out: w.model === 'gpt2',
  };
}

export interface Options {
  steps: number;
  warmup: number;
  threads: number;
  batch: number;
  seq: number;
  rank: number;
  newTokens: number;
  peftAttention: 'sdpa' | 'eager';
  malloc: Malloc;
}

/** The default suite: LoRA training on both shapes and both target sets, eval, generation at batch 1 and 8. */
export function suite(o: Options): Workload[] {
  const base = {
    rank: o.rank,
    newTokens: o.newTokens,
    warmup: o.warmup,
    steps: o.steps,
    threads: o.threads,
    peftAttention: o.peftAttention,
    malloc: o.malloc,
  };
  const out: Workload[] = [];
  for (const model of ['gpt2', 'smollm'] as const) {
    for (const targets of ['attn', 'all'] as const)
      out.push({ ...base, id: `train ${model} ${targets}`, kind: 'train', model, targets, batch: o.batch, seq: o.seq });
    const int8 = { ...base, kind: 'train' as const, model, targets: 'attn' as const, batch: o.batch, seq: o.seq };
    out.push({ ...int8, id: `train ${model} attn int8-base`, quantize: 'int8' });
    out.push({ ...base, id: `eval ${model} attn`, kind: 'eval', model, targets: 'attn', batch: o.batch, seq: o.seq });
    for (const batch of [1, 8]) {
      out.push({
        ...base,
        id: `gen ${model} b${batch}`,
        kind: 'gen',
        model,
        targets: 'attn',
        batch,
        seq: Math.min(128, o.seq),
        steps: Math.max(1, Math.ceil(o.steps / 2)),
      });
    }
  }
  return out;
}

/** The fp32 MatMul peak measurement, best of 10 runs (through ORT in lorakit.ts; through torch in the PEFT runner). */
export function matmulWorkload(o: Options, size = 2048): Workload {
  return {
    id: `matmul ${size}`,
    kind: 'matmul',
    model: 'gpt2',
    targets: 'attn',
    rank: 0,
    batch: 1,
    seq: 0,
    newTokens: 0,
    warmup: 2,
    steps: 10,
    threads: o.threads,
    size,
  };
}

/** Sizes that the FLOP count needs. */
export interface ModelDims {
  /** Σ in·out over every Linear/Conv1D, the LM head included (multiply-adds per token). */
  matmulParams: number;
  layers: number;
  /** Width of the attention scores' contraction: heads · head size. */
  attnWidth: number;
}

export function modelDims(model: ModelName): ModelDims {
  const c = parseModelConfig(CONFIGS[model], model);
  let matmulParams = 0;
  for (const m of familyOf(c).modules(c))
    if (m.kind === 'linear' || m.kind === 'conv1d') matmulParams += m.inFeatures * m.outFeatures;
  if (c.model_type === 'gpt2') return { matmulParams, layers: c.n_layer, attnWidth: c.n_embd };
  if (c.model_type === 'bert') throw new Error('internal: no bert workloads');
  return { matmulParams, layers: c.num_hidden_layers, attnWidth: c.num_attention_heads * c.head_dim };
}

/**
 * Model FLOPs of one step, counting 2 FLOPs per multiply-add, with N = matmulParams, L layers, A = attnWidth, T the
 * sequence length and P the adapter's parameter count:
 *   forward per token      2N + 4·L·T·A + 2P            (Q·Kᵀ and P·V over the full T×T square, as computed)
 *   LoRA train per token   forward + 2N + 8·L·T·A + 4P  (gradients w.r.t. activations through every frozen
 *                          matmul and attention; weight gradients only for the adapter)  = 4N + 12·L·T·A + 6P
 * Generation is not counted (it is bound by memory and host work, not FLOPs).
 */
export function stepFlops(
  kind: 'train' | 'eval',
  d: ModelDims,
  batch: number,
  seq: number,
  adapterParams: number,
): number {
  const attn = d.layers * seq * d.attnWidth;
  const perToken =
    kind === 'train'
      ? 4 * d.matmulParams + 12 * attn + 6 * adapterParams
      : 2 * d.matmulParams + 4 * attn + 2 * adapterParams;
  return perToken * batch * seq;
}

/** The GEMMs of a `train` step on `model`, alone (gemm.ts): best of 10 runs per product. */
export function gemmWorkload(o: Options, model: ModelName, shapes: GemmShape[]): Workload {
  return {
    id: `gemm ${model}`,
    kind: 'gemm',
    model,
    targets: 'attn',
    rank: 0,
    batch: o.batch,
    seq: o.seq,
    newTokens: 0,
    warmup: 2,
    steps: 10,
    threads: o.threads,
    shapes,
  };
}
