// GPT-2 against transformers (logits, left padding, KV cache, greedy), and one block's gradient with respect to its
// input hidden states against finite differences in float64 (Conv1D layout, LayerNorm, gelu_new, causal attention).
import { test } from 'node:test';
import { parseModelConfig, type Gpt2Config } from '../../src/io/index.ts';
import { causalSetup, familyOf, gpt2Block, memoryContext } from '../../src/models/index.ts';
import type { ModelContext } from '../../src/nn/index.ts';
import { gradcheck } from '../graph/gradcheck.ts';
import { randArray } from '../helpers.ts';
import { causalParitySuite } from './causal-suite.ts';

causalParitySuite('gpt2');

test('gradient: a GPT-2 block (Conv1D, LayerNorm, gelu_new, padding mask) w.r.t. its input, float64', async () => {
  const config = parseModelConfig({
    model_type: 'gpt2',
    n_embd: 16,
    n_layer: 1,
    n_head: 4,
    n_inner: 24,
    vocab_size: 8,
    n_positions: 8,
  });
  const overrides = new Map<string, Float64Array>();
  familyOf(config)
    .parameters(config)
    .filter((p) => p.name.startsWith('transformer.h.0.'))
    .forEach((p, k) => {
      const n = p.shape.reduce((a, b) => a * b, 1);
      overrides.set(
        p.name,
        randArray(
          n,
          20 + k,
          p.name.endsWith('ln_1.weight') || p.name.endsWith('ln_2.weight') ? 0.5 : -0.5,
          p.name.includes('ln_') && p.name.endsWith('weight') ? 1.5 : 0.5,
        ),
      );
    });
  const [B, T] = [2, 3];
  // ORT keeps LayerNorm statistics in float32 even for float64 inputs (docs/decisions.md), hence rtol 1e-5.
  await gradcheck(
    (g, [x]) => {
      const ctx = memoryContext(config, g, { overrides, dtype: 'f64' }) as ModelContext<Gpt2Config>;
      const setup = causalSetup(ctx, {
        inputIds: g.constant(new Array(B * T).fill(0), 'i64', [B, T]),
        attentionMask: g.constant([1, 1, 1, 0, 1, 1], 'i64', [B, T]),
      });
      return gpt2Block(ctx, 0, x, setup.mask).hidden;
    },
    [{ shape: [B, T, 16] }],
    { rtol: 1e-5, atol: 1e-7 },
  );
});
