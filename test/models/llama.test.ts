// The Llama family (Llama 2/3, Mistral, Qwen2 in bf16, SmolLM tied) against transformers, and one decoder layer's
// gradient with respect to its input hidden states against finite differences in float64.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseModelConfig, type LlamaLikeConfig } from '../../src/io/index.ts';
import { causalSetup, familyOf, llamaDecoderLayer, llamaRope, memoryContext } from '../../src/models/index.ts';
import { type ModelContext, ropeInvFreq } from '../../src/nn/index.ts';
import { gradcheck } from '../graph/gradcheck.ts';
import { randArray } from '../helpers.ts';
import { causalParitySuite } from './causal-suite.ts';
import { i64, maxAbsDiff } from './helpers.ts';

for (const name of ['llama', 'mistral', 'qwen2', 'smollm']) causalParitySuite(name);

const llama3 = causalParitySuite('llama3');

test("llama3: RoPE inverse frequencies equal transformers' llama3 scaling", () => {
  const { model, e } = llama3();
  const c = model.config as LlamaLikeConfig;
  assert.deepEqual([...ropeInvFreq(c.head_dim, c.rope_theta, c.rope_scaling)], e.json.rope_inv_freq);
});

test("llama3: 64-token logits (past original_max_position_embeddings) equal transformers'", async () => {
  const { model, e, full } = llama3();
  const ids: number[][] = e.json.long_input_ids;
  const out = await full.run({
    input_ids: i64(ids),
    position_ids: i64([ids[0].map((_, t) => t)]),
    attention_mask: i64([ids[0].map(() => 1)]),
  });
  const d = maxAbsDiff(out.logits.data as Float32Array, e.tensors.long_logits, [1, 64, model.config.vocab_size]);
  assert.ok(d <= 1e-4, `max |Δlogits| ${d}`);
});

test(
  'gradient: a Llama decoder layer (GQA, RoPE, RMSNorm, SwiGLU, padding mask) w.r.t. its input, ' + 'float64',
  async () => {
    const config = parseModelConfig({
      model_type: 'llama',
      hidden_size: 16,
      num_hidden_layers: 1,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      intermediate_size: 24,
      vocab_size: 8,
      max_position_embeddings: 16,
      rms_norm_eps: 1e-5,
      rope_scaling: {
        rope_type: 'llama3',
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 8,
      },
    });
    const overrides = new Map<string, Float64Array>();
    familyOf(config)
      .parameters(config)
      .filter((p) => p.name.startsWith('model.layers.0.'))
      .forEach((p, k) => {
        const n = p.shape.reduce((a, b) => a * b, 1);
        overrides.set(
          p.name,
          randArray(n, 10 + k, p.shape.length === 1 ? 0.5 : -0.5, p.shape.length === 1 ? 1.5 : 0.5),
        );
      });
    const [B, T] = [2, 3];
    await gradcheck(
      (g, [x]) => {
        const ctx = memoryContext(config, g, { overrides, dtype: 'f64' }) as ModelContext<LlamaLikeConfig>;
        const setup = causalSetup(ctx, {
          inputIds: g.constant(new Array(B * T).fill(0), 'i64', [B, T]),
          attentionMask: g.constant([1, 1, 1, 0, 1, 1], 'i64', [B, T]),
          positionIds: g.constant([0, 1, 2, 1, 0, 1], 'i64', [B, T]),
        });
        return llamaDecoderLayer(ctx, 0, x, { rope: llamaRope(ctx, setup.positionIds), mask: setup.mask }).hidden;
      },
      [{ shape: [B, T, 16] }],
    );
  },
);
