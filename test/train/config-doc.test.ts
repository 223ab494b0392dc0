// docs/config.md is the run config schema rendered (scripts/config-doc.ts): the committed file must equal what the
// schema renders now, and every key of the schema must be described and listed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { CONFIG_REFERENCE_PATH, configReference, resolvedConfigYaml } from '../../src/train/config-doc.ts';
import { runConfigSchema, type RunConfig } from '../../src/train/index.ts';
import { diffusionRunSchema } from '../../src/train/diffusion-run.ts';
import { segmentationRunSchema } from '../../src/train/segmentation-run.ts';

const root = new URL('../../', import.meta.url).pathname;

/** Every key of the schema as [dotted path, its schema], sections walked into (read from zod, not the renderer). */
function keys(): [string, z.ZodType][] {
  const out: [string, z.ZodType][] = [];
  for (const [k, v] of Object.entries(runConfigSchema.shape)) {
    out.push([k, v as z.ZodType]);
    const inner = (v as { unwrap?: () => unknown }).unwrap?.() ?? v;
    const shape = (inner as { shape?: Record<string, z.ZodType> }).shape;
    if (shape && k !== 'adapter') for (const [k2, v2] of Object.entries(shape)) out.push([`${k}.${k2}`, v2]);
  }
  return out;
}

test('docs/config.md is exactly what the schema renders (run `npm run config-doc` after changing the schema)', () => {
  const committed = readFileSync(join(root, CONFIG_REFERENCE_PATH), 'utf8');
  assert.equal(committed, configReference());
});

test('every key of the run config has a description and a row in docs/config.md', () => {
  const doc = readFileSync(join(root, CONFIG_REFERENCE_PATH), 'utf8');
  const all = keys();
  assert.ok(all.length > 30, `found ${all.length} keys`);
  for (const [path, schema] of all) {
    assert.ok(schema.description && schema.description.length > 10, `${path} has a description`);
    const key = path.split('.').at(-1)!;
    if (path.includes('.') || !['data', 'training'].includes(path))
      assert.ok(doc.includes(`| \`${key}\` |`), `${path} has a row`);
    assert.ok(doc.includes(schema.description!.replaceAll('|', '\\|')), `${path}'s description is in the doc`);
  }
});

test('every key of the diffusion and segmentation run configs has a description and a row under its task', () => {
  const doc = readFileSync(join(root, CONFIG_REFERENCE_PATH), 'utf8');
  for (const [task, schema] of [
    ['diffusion', diffusionRunSchema],
    ['segmentation', segmentationRunSchema],
  ] as const) {
    const part = doc.slice(doc.indexOf(`## \`task: ${task}\``));
    assert.ok(part.length < doc.length, `docs/config.md has a task: ${task} section`);
    let n = 0;
    for (const [k, v] of Object.entries(schema.shape)) {
      const walk: [string, z.ZodType][] = [[k, v as z.ZodType]];
      let inner: unknown = v;
      for (let i = 0; i < 3; i++) inner = (inner as { unwrap?: () => unknown }).unwrap?.() ?? inner; // optional/default
      const shape = (inner as { shape?: Record<string, z.ZodType> }).shape;
      if (shape) walk.push(...Object.entries(shape));
      for (const [key, s] of walk) {
        n++;
        assert.ok(s.description && s.description.length > 10, `${task}: ${key} has a description`);
        assert.ok(part.includes(`| \`${key}\` |`) || part.includes(`### \`${key}\``), `${task}: ${key} is listed`);
        assert.ok(part.includes(s.description.replaceAll('|', '\\|')), `${task}: ${key}'s description is in the doc`);
      }
    }
    assert.ok(n > 12, `${task}: found ${n} keys`);
  }
});

test('--print-config YAML reads back as the same config, with the adapter method defaults filled in', () => {
  const c: RunConfig = runConfigSchema.parse({
    model: '/m',
    output_dir: '/o',
    data: { path: '/d.jsonl' },
    adapter: { target_modules: ['q_proj'], r: 4 },
  });
  const back = parseYaml(resolvedConfigYaml(c));
  const again = runConfigSchema.parse(back);
  assert.deepEqual({ ...again, adapter: undefined }, { ...c, adapter: undefined });
  assert.equal(back.training.learning_rate, 5e-5);
  assert.equal(back.adapter.r, 4);
  assert.equal(back.adapter.lora_alpha, 8, "LoraConfig's default lora_alpha is filled in");
  assert.equal(back.adapter.peft_type, 'LORA');
});
