// The data side of interop/peft_bnb_accuracy.py (run with `node --import tsx`): the exact training windows and
// held-out windows bench/quant-accuracy.ts trains and evaluates on (src/demo: Brown fiction, byte-level ids,
// WindowSampler batch i for step i + 1, evalBatches' evenly spaced held-out windows with special targets ignored),
// written as JSON so PEFT trains on the same bytes in the same order.
// Usage: node --import tsx interop/quant_accuracy_data.ts <out.json> [steps 30] [batch 4] [seqLen 128] [windows 32]
//        [seed 0]
import { writeFileSync } from 'node:fs';
import { WindowSampler, evalBatches, tokenStream } from '../src/demo/data.ts';
import { readBrown, splitBrown } from '../src/demo/brown.ts';

const [out, ...rest] = process.argv.slice(2);
const [steps, batch, seqLen, windows, seed] = [30, 4, 128, 32, 0].map((d, i) => (rest[i] ? Number(rest[i]) : d));
const split = splitBrown(readBrown({ side: 'fiction' }), 'fiction');
const sampler = new WindowSampler(tokenStream(split.train), seqLen, seed);
const ids = (a: BigInt64Array) => Array.from(a, Number);
const train = Array.from({ length: steps }, (_, i) => {
  const b = sampler.batch(i, batch);
  return { input_ids: ids(b.inputIds), labels: ids(b.labels) };
});
const held = evalBatches(tokenStream(split.heldOut), seqLen, batch, windows).map((b) => ({
  input_ids: ids(b.inputIds),
  labels: ids(b.labels),
}));
writeFileSync(out, JSON.stringify({ steps, batch, seqLen, windows, seed, train, eval: held }));
console.log(`wrote ${out}: ${train.length} training batches, ${held.length} held-out batches of ${batch} x ${seqLen}`);
