// `lorakit mixture`: trains a LoRA mixture (ReMix or LoRA-Mixer, peft/mixture/) on a base model from a YAML/JSON
// mixture config and one text file per domain (or the demo corpus's Brown fiction genres with --brown), evaluates it
// on each domain's held-out part (the last tenth of each file's tokens, or Brown's held-out files) and writes the
// mixture folder (mixture_config.json + mixture_model.safetensors). With --mixture it evaluates a saved folder only.
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { LorakitError } from '../errors.ts';
import { intFlag, numberFlag, requiredFlag } from './flags.ts';
import type { CommandModule } from './main.ts';

interface Flags {
  config?: unknown;
  mixture?: unknown;
  model?: unknown;
  domain?: unknown;
  brown?: unknown;
  steps?: unknown;
  hardSteps?: unknown;
  batch?: unknown;
  seqLen?: unknown;
  lr?: unknown;
  seed?: unknown;
  evalWindows?: unknown;
  out?: unknown;
  experts?: unknown;
  routerLrRatio?: unknown;
}

const bad = (flag: string, msg: string) => new LorakitError('LK_INVALID_ARGUMENT', msg, { option: flag });

/** `NAME=FILE`. */
export function parseDomainFlag(v: string): { name: string; file: string } {
  const i = v.indexOf('=');
  if (i <= 0 || i === v.length - 1) throw bad('domain', `--domain expects NAME=FILE, got "${v}"`);
  return { name: v.slice(0, i), file: v.slice(i + 1) };
}

export const register: CommandModule['register'] = (cli) => {
  cli
    .command('mixture', 'Train and evaluate a mixture of LoRAs with learned routing (ReMix, LoRA-Mixer)')
    .option('--config <file>', 'Mixture config, YAML or JSON (method: remix | lora_mixer, num_experts, r, top_k, ...)')
    .option('--mixture <dir>', 'Evaluate this saved mixture folder instead of training one')
    .option('--model <dir>', 'Base model folder', { default: 'models/demo-base' })
    .option('--domain <name=file>', 'A domain: its name and a text file (repeat; domain i trains expert i mod n)')
    .option('--brown <genres>', 'Domains from the demo corpus: comma-separated Brown fiction genres')
    .option('--steps <n>', 'ReMix: training steps; LoRA-Mixer: stage-2 (router) steps', { default: 20 })
    .option('--hard-steps <n>', 'LoRA-Mixer: stage-1 steps (hard routing by domain)', { default: 20 })
    .option('--batch <n>', 'Windows per step (ReMix routes each M times)', { default: 4 })
    .option('--seq-len <n>', 'Tokens per window', { default: 128 })
    .option('--lr <x>', 'Peak learning rate (10 % warmup, cosine decay)', { default: 2e-3 })
    .option('--router-lr-ratio <x>', 'The routers learn at lr times this', { default: 1 })
    .option('--seed <n>', 'Seed of the windows and the Gumbel noise', { default: 0 })
    .option('--eval-windows <n>', 'Held-out windows per domain', { default: 16 })
    .option('--experts <dirs>', 'Comma-separated PEFT LoRA folders put into expert slots 0, 1, … before training')
    .option('--out <dir>', 'Folder to write the trained mixture to')
    .action(async (flags: Flags) => {
      const { MixtureModel, parseMixtureConfig } = await import('../peft/mixture/index.ts');
      const { trainMixture, evaluateMixture } = await import('../demo/mixture.ts');
      const { loadModel } = await import('../models/load.ts');
      const { evalBatches } = await import('../demo/data.ts');
      const { shutdownRuntime } = await import('../runtime/index.ts');
      const domains = await readDomains(flags, String(flags.model));
      const batch = intFlag('batch', flags.batch)!;
      const seqLen = intFlag('seq-len', flags.seqLen)!;
      const model = await loadModel(String(flags.model));
      try {
        let mixture: import('../peft/mixture/index.ts').MixtureModel;
        if (flags.mixture !== undefined) {
          mixture = await MixtureModel.load(requiredFlag('mixture', flags.mixture, 'a mixture folder'));
        } else {
          const file = requiredFlag('config', flags.config, 'the mixture config (YAML or JSON)', '<file>');
          const out = requiredFlag('out', flags.out, 'the folder to write the mixture to');
          const config = parseMixtureConfig(parseYaml(readFileSync(file, 'utf8')), file);
          mixture = MixtureModel.create(config, model.modules());
          if (flags.experts !== undefined) await mixture.plugLoraFolders(String(flags.experts).split(','));
          const t0 = performance.now();
          await trainMixture({
            model,
            mixture,
            domains: domains.map((d) => ({ name: d.name, stream: d.train })),
            steps: intFlag('steps', flags.steps)!,
            hardSteps: intFlag('hard-steps', flags.hardSteps, 0),
            batch,
            seqLen,
            lr: numberFlag('lr', flags.lr)!,
            seed: intFlag('seed', flags.seed, 0)!,
            routerLrRatio: numberFlag('router-lr-ratio', flags.routerLrRatio),
            onStep: (r) => console.error(`${r.stage} step ${r.step}: ce ${r.ce.toFixed(4)} loss ${r.loss.toFixed(4)}`),
          });
          await mixture.save(out, String(flags.model));
          console.log(
            `trained ${config.method} (${mixture.modules.length} modules, ${config.num_experts} experts of rank ` +
              `${config.r}, top-${config.top_k}; ${mixture.activatedParams()} activated LoRA parameters) in ` +
              `${((performance.now() - t0) / 1000).toFixed(0)} s, written to ${out}`,
          );
        }
        const windows = intFlag('eval-windows', flags.evalWindows)!;
        for (const d of domains) {
          const r = await evaluateMixture(
            model,
            mixture,
            evalBatches(d.heldOut, seqLen, batch, windows, d.firstSpecial),
            batch,
            seqLen,
          );
          console.log(
            `${d.name}: held-out loss ${r.loss.toFixed(4)} nats/token, effective support ${r.essWeights.toFixed(2)} ` +
              `(router ${r.essRouter.toFixed(2)})`,
          );
        }
      } finally {
        await model.close();
        await shutdownRuntime();
      }
    });
};

interface Domain {
  name: string;
  train: Uint16Array;
  heldOut: Uint16Array;
  /** Held-out targets from this id up are not counted: the byte tokenizer's specials, none for a model tokenizer. */
  firstSpecial?: number;
}

async function readDomains(flags: Flags, modelDir: string): Promise<Domain[]> {
  if (flags.brown !== undefined) {
    const { readBrown, splitBrown } = await import('../demo/brown.ts');
    const { tokenStream } = await import('../demo/data.ts');
    const split = splitBrown(readBrown({ side: 'fiction' }), 'fiction');
    return String(flags.brown)
      .split(',')
      .map((g) => {
        const train = split.train.filter((f) => f.genre === g);
        if (train.length === 0) throw bad('brown', `--brown: "${g}" is not a Brown fiction genre with files`);
        return { name: g, train: tokenStream(train), heldOut: tokenStream(split.heldOut.filter((f) => f.genre === g)) };
      });
  }
  const raw = flags.domain === undefined ? [] : [flags.domain].flat();
  if (raw.length === 0) throw bad('domain', '--domain <name=file> (repeated) or --brown <genres> is required');
  const { HfTokenizer } = await import('../io/index.ts');
  const tok = await HfTokenizer.fromDir(modelDir);
  return raw.map((v) => {
    const { name, file } = parseDomainFlag(String(v));
    const encoded = tok.encode(readFileSync(file, 'utf8'));
    // the window sampler holds token ids as 16-bit
    if (encoded.some((t) => t > 0xffff))
      throw new LorakitError('LK_UNSUPPORTED', `--domain ${name}: token ids above 65535 (vocabularies that large)`);
    const ids = Uint16Array.from(encoded);
    const cut = Math.floor(ids.length * 0.9);
    return { name, train: ids.subarray(0, cut), heldOut: ids.subarray(cut), firstSpecial: Number.POSITIVE_INFINITY };
  });
}
