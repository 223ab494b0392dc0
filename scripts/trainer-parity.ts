/**
 * lorakit's side of the trainer parity check (interop/trainer_parity.py runs it and compares): the Trainer continues
 * a PEFT-made adapter on the demo base for STEPS optimizer steps of ACCUM micro-batches each, on windows of Brown
 * fiction bytes, with AdamW, warmup + cosine, clipping at 1.0 and token-weighted accumulation — the settings of the
 * PyTorch loop on the Python side. Writes into OUT: batches.json (every micro-batch in the order the Trainer consumed
 * it, which the PyTorch loop replays) and lorakit.json (per step: loss, grad norm, lr); the Trainer's checkpoints
 * (one per step) hold the adapter after each step.
 *
 *   node --import tsx scripts/trainer-parity.ts <start-adapter-dir> <out-dir>
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEMO_BASE_DIR } from '../src/demo/base.ts';
import { readBrown, splitBrown } from '../src/demo/brown.ts';
import { tokenStream } from '../src/demo/data.ts';
import { loadModel } from '../src/models/index.ts';
import { adaptable, loadAdapter, PeftModel } from '../src/peft/index.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';
import { TokenDataset } from '../src/train/data/index.ts';
import { causalLmTask, type StepRecord, type TrainBatch, train } from '../src/train/index.ts';

/** The run both sides follow (the Python side reads it from lorakit.json). */
export const SETTINGS = {
  steps: 20,
  accumulation: 2,
  batch: 4,
  seqLen: 64,
  lr: 2e-3,
  warmupSteps: 3,
  weightDecay: 0.01,
  clipNorm: 1,
  seed: 11,
};

async function main(startDir: string, out: string): Promise<void> {
  mkdirSync(out, { recursive: true });
  const s = SETTINGS;
  // rows of T + 0 bytes cut from the fiction stream; labels are the rows themselves (the loss shifts them)
  const stream = tokenStream(splitBrown(readBrown({ side: 'fiction' }), 'fiction').train);
  const rows = 64;
  const ids = Int32Array.from(stream.subarray(0, rows * s.seqLen));
  const data = new TokenDataset(
    { seqLen: s.seqLen, ids, labels: ids, lengths: new Uint32Array(rows).fill(s.seqLen) },
    0,
  );
  const model = await loadModel(DEMO_BASE_DIR);
  const peft = new PeftModel(adaptable(model));
  await loadAdapter(peft, startDir);
  const task = causalLmTask({ model, peft, adapter: 'default', train: data, batchSize: s.batch, dataSeed: s.seed });
  const consumed: { input_ids: number[][] }[] = [];
  const batches = task.batches.bind(task);
  task.batches = function* (from) {
    for (const b of batches(from) as Iterable<TrainBatch>) {
      const f = b.feeds.input_ids as { data: BigInt64Array; shape: number[] };
      const [B, T] = f.shape;
      consumed.push({
        input_ids: Array.from({ length: B }, (_, r) => Array.from(f.data.subarray(r * T, (r + 1) * T), Number)),
      });
      yield b;
    }
  };
  const records: StepRecord[] = [];
  await train(task, {
    outputDir: join(out, 'run'),
    steps: s.steps,
    gradientAccumulation: s.accumulation,
    lr: s.lr,
    schedule: 'cosine',
    warmupSteps: s.warmupSteps,
    weightDecay: s.weightDecay,
    clipNorm: s.clipNorm,
    seed: s.seed,
    checkpointEvery: 1,
    progress: 'none',
    plot: false,
    onStep: (r) => {
      records.push(r);
    },
  });
  writeFileSync(join(out, 'batches.json'), JSON.stringify(consumed.slice(0, s.steps * s.accumulation)));
  const steps = records.map((r) => ({ step: r.step, loss: r.loss, grad_norm: r.grad_norm, lr: r.lr }));
  writeFileSync(join(out, 'lorakit.json'), JSON.stringify({ settings: s, steps }, null, 1));
  await model.close();
  await shutdownRuntime();
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [startDir, out] = process.argv.slice(2);
  if (!startDir || !out)
    throw new Error('usage: node --import tsx scripts/trainer-parity.ts <start-adapter-dir> <out-dir>');
  await main(startDir, out);
}
