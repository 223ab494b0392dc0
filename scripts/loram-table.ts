/**
 * The LoRAM table of docs/compression.md: on the demo task (the bundled byte-level base, Brown fiction) one run of
 * `runLoram` — the base pruned to `ratio` of its KV-head groups and MLP channels by Taylor scores, the demo's LoRA
 * trained on the pruned model, recovered to the full base — and the same LoRA trained on the full base, both with
 * the demo's schedule; the full-base held-out loss without adapter, with each adapter, and the pruned base's.
 * A small real run, not a claim of paper parity (no alignment pre-training of the pruned model, no 4-bit base).
 *
 *   node --import tsx scripts/loram-table.ts [--steps 40] [--ratio 0.5] [--eval-bytes 32768] [--out DIR]   # prints the markdown rows
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DEMO_BASE_DIR } from '../src/demo/base.ts';
import { readBrown, splitBrown } from '../src/demo/brown.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';
import { runConfigSchema, runLoram } from '../src/train/index.ts';

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '40' },
    ratio: { type: 'string', default: '0.5' },
    'eval-bytes': { type: 'string', default: '32768' },
    out: { type: 'string' },
  },
});
const steps = Number(values.steps);
const ratio = Number(values.ratio);
const evalBytes = Number(values['eval-bytes']);
const out = values.out ?? join(tmpdir(), `lorakit-loram-table-${process.pid}`);
mkdirSync(out, { recursive: true });

// The demo's split: held-out files are a stable tenth of each fiction genre; each file is one document, evaluated on
// an equal share of `evalBytes` from its start (five evaluations of the whole held-out tenth take minutes on 2 cores).
const split = splitBrown(readBrown({ side: 'fiction' }), 'fiction');
const jsonl = (files: { text: string }[]) => `${files.map((f) => JSON.stringify({ text: f.text })).join('\n')}\n`;
writeFileSync(join(out, 'train.jsonl'), jsonl(split.train));
const share = Math.ceil(evalBytes / split.heldOut.length);
writeFileSync(join(out, 'heldout.jsonl'), jsonl(split.heldOut.map((f) => ({ text: f.text.slice(0, share) }))));

const c = runConfigSchema.parse({
  model: DEMO_BASE_DIR,
  output_dir: join(out, 'run'),
  data: { path: join(out, 'train.jsonl'), format: 'text', seq_len: 256, packing: true, cache_dir: false },
  adapter: {
    r: 16,
    lora_alpha: 32,
    lora_dropout: 0,
    target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
  },
  training: {
    max_steps: steps,
    per_device_train_batch_size: 8,
    learning_rate: 2e-3,
    lr_scheduler_type: 'cosine',
    warmup_ratio: 0.1,
    seed: 0,
  },
});
try {
  const r = await runLoram(c, { ratio, evalData: join(out, 'heldout.jsonl') }, { progress: 'none' });
  const e = r.eval!;
  const n = (x: number) => x.toLocaleString('en-US');
  const o = r.plan.original;
  console.log(
    `ratio ${ratio}: kept ${r.plan.layers[0].heads.length}/${o.num_key_value_heads} KV-head groups, ` +
      `${r.plan.layers[0].channels.length}/${o.intermediate_size} MLP channels per layer; base parameters ` +
      `${n(r.parameters.full)} full, ${n(r.parameters.pruned)} pruned; ${steps} steps`,
  );
  console.log('| adapter | trained on | trainable values | train time | full-base held-out loss |');
  console.log('|---|---|---:|---:|---:|');
  console.log(`| none | — | 0 | — | ${e.fullBase.toFixed(4)} |`);
  console.log(
    `| LoRAM (recovered) | pruned base | ${n(r.trainable.loram)} | ${r.seconds.loram.toFixed(0)} s | ${e.loram.toFixed(4)} |`,
  );
  console.log(
    `| LoRA | full base | ${n(r.trainable.lora!)} | ${r.seconds.lora!.toFixed(0)} s | ${e.lora!.toFixed(4)} |`,
  );
  console.log(
    `pruned base held-out loss: ${e.prunedBase.toFixed(4)}; with its LoRAM adapter: ${e.prunedWithAdapter.toFixed(4)}`,
  );
  console.log(`run folder: ${out}`);
} finally {
  await shutdownRuntime();
}
