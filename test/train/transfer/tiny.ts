// Tiny demo-family bases for the transfer tests: byte-level Llamas of a few thousand parameters, written to a temp
// folder with the demo base's writer (so they load, tokenize and generate like models/demo-base).
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type DemoShape, demoConfig, initDemoWeights, writeDemoModel } from '../../../src/demo/base.ts';

/** A tiny shape: `width` = 64·heads, 96-wide MLP, `layers` layers, one kv head. */
export function tinyShape(layers = 3, heads = 1): DemoShape {
  return {
    hidden_size: 64 * heads,
    intermediate_size: 96,
    num_hidden_layers: layers,
    num_attention_heads: heads,
    num_key_value_heads: 1,
  };
}

/** Writes a tiny base with random weights (deterministic in `seed`) and returns its folder. */
export async function tinyBase(shape: DemoShape, seed: number): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'lk-transfer-base-'));
  const config = demoConfig(shape);
  const weights = initDemoWeights(config, seed);
  // larger than the pretraining init (0.02), so the random model's outputs differ visibly between inputs
  for (const [n, v] of weights) if (!n.endsWith('norm.weight')) for (let i = 0; i < v.length; i++) v[i] *= 10;
  await writeDemoModel(dir, config, weights, '# tiny test base\n', shape);
  return dir;
}
