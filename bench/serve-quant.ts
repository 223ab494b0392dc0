/**
 * The serving engine over the real SmolLM2-135M-Instruct GGUF (../shared/data/models/…) with its frozen base held as
 * float32, int8 or q4 (`--quantize` of `lorakit serve`): one mode per process, so the process's RSS is the mode's.
 * Prints one RESULT line and appends it to bench/results/serve-quant.jsonl; docs/serving.md holds the table.
 *   node --import tsx bench/serve-quant.ts --mode none|int8|q4 [--new-tokens 24] [--rows 1,4]
 * Measured: RSS after the engine is built (idle) and at the end (peak, getrusage), decode tokens/s of a batch of
 * `rows` greedy completions (half on the base, half on one random r 8 LoRA over q/k/v/o) = rows × (N − 1) / (time
 * from the batch's first token to its last), and the greedy tokens of the base row (to compare modes afterwards).
 */
import { appendFileSync, mkdirSync, mkdtempSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { HfTokenizer } from '../src/io/index.ts';
import { loadModel, quantizeModel } from '../src/models/index.ts';
import type { QuantMode } from '../src/nn/index.ts';
import { PeftModel, adaptable, saveAdapter } from '../src/peft/index.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';
import { createEngine } from '../src/serve/index.ts';
import { RESULTS } from './common.ts';

const GGUF = join(
  import.meta.dirname,
  '../../shared/data/models/smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf',
);
const arg = (name: string, d: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : d;
};
const mib = (b: number) => Math.round(b / 2 ** 20);

async function main(): Promise<void> {
  const mode = arg('mode', 'none') as QuantMode;
  const N = Number(arg('new-tokens', '24'));
  const rowCounts = arg('rows', '1,4').split(',').map(Number);
  const load0 = loadavg()[0];
  const t0 = performance.now();
  const loaded = await loadModel(GGUF);
  const model = await quantizeModel(loaded, mode);
  const tokenizer = await HfTokenizer.fromDir(model.dir);
  const root = mkdtempSync(join(tmpdir(), 'lorakit-serve-quant-'));
  const peft = new PeftModel(adaptable(loaded));
  const cfg = { peft_type: 'LORA', r: 8, lora_alpha: 16, target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'] };
  await peft.addAdapter('a', { ...cfg, init_lora_weights: false }, { seed: 0 });
  await saveAdapter(peft, 'a', join(root, 'a'));
  const engine = await createEngine({
    model,
    tokenizer,
    adapterDir: root,
    maxLoras: 2,
    maxLoraRank: 8,
    maxModelLen: 256,
  });
  const prompt = tokenizer.encode('The old house stood by the river, and every morning the');
  await engine.generate({ adapter: 'a', promptIds: prompt, maxTokens: 2, sampling: { temperature: 0 } }); // warm-up
  const readyS = (performance.now() - t0) / 1000;
  const idleRss = process.memoryUsage().rss;
  const decode: Record<string, number> = {};
  let baseTokens: number[] = [];
  for (const rows of rowCounts) {
    const done = await Promise.all(
      Array.from({ length: rows }, (_, i) =>
        engine.generate({
          adapter: i % 2 ? 'a' : null,
          promptIds: prompt,
          maxTokens: N,
          sampling: { temperature: 0 },
          ignoreEos: true,
        }),
      ),
    );
    const first = Math.max(...done.map((d) => d.timings.firstTokenMs));
    const last = Math.max(...done.map((d) => d.timings.totalMs));
    decode[rows] = (rows * (N - 1) * 1000) / (last - first);
    baseTokens = done[0].choices[0].tokenIds;
    console.log(`${mode}: ${rows} rows, ${decode[rows].toFixed(2)} decode tokens/s`);
  }
  await engine.close();
  await engine.parts.session.dispose();
  const row = {
    date: new Date().toISOString(),
    mode,
    newTokens: N,
    decodeTokensPerS: decode,
    readyS,
    idleRssMiB: mib(idleRss),
    peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
    quantizedMB: model.quantizedBase ? model.quantizedBase.quantizedBytes / 1e6 : null,
    floatMB: model.quantizedBase ? model.quantizedBase.floatBytes / 1e6 : null,
    load: [load0, loadavg()[0]],
    baseTokens,
  };
  console.log(`RESULT ${JSON.stringify(row)}`);
  mkdirSync(RESULTS, { recursive: true });
  appendFileSync(join(RESULTS, 'serve-quant.jsonl'), `${JSON.stringify(row)}\n`);
  await loaded.close();
  await shutdownRuntime();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
