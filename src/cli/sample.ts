// `lorakit sample`: draws images from a diffusion U-Net folder with zero or more LoRAs composed by one method
// (serve/diffusion-compose.ts) and writes them as one PNG grid (cli/png.ts). Prompts are token ids of the model's
// one-hot prompt vocabulary (for the digit-canvas models: digits 0–9, 10 empty, 11 null); a U-Net trained with
// positional prompts (its lorakit_prompt.json) reads them as [left, right] and gets their positions added here.
// cmlora-freq first draws with each LoRA alone on the same prompt to score and order the LoRAs by frequency.
import type { CommandModule } from './main.ts';
import { intFlag, numberFlag, requiredFlag } from './flags.ts';

interface Flags {
  model?: unknown;
  lora?: unknown;
  compose?: unknown;
  steps?: unknown;
  sampler?: unknown;
  prompt?: unknown;
  n?: unknown;
  guidance?: unknown;
  seed?: unknown;
  out?: unknown;
}

export const register: CommandModule['register'] = (cli) => {
  cli
    .command('sample', 'Draw images (a PNG grid) from a diffusion U-Net folder with LoRAs composed by one method')
    .option('--model <dir>', 'UNet2DConditionModel folder (config.json, diffusion_pytorch_model.safetensors)')
    .option('--lora <dir>', 'a concept LoRA folder (repeatable)')
    .option('--compose <method>', 'merge, switch, composite, cmlora or cmlora-freq (default merge)')
    .option('--steps <n>', 'inference steps (default 50)')
    .option('--sampler <name>', 'ddim or ddpm (default ddim)')
    .option('--prompt <ids>', 'prompt token ids, comma-separated, e.g. 5,7 (default: 11 repeated, the null prompt)')
    .option('--n <n>', 'images to draw (default 8)')
    .option('--guidance <g>', 'classifier-free guidance scale (default 3)')
    .option('--seed <n>', 'seed of the initial and step noise (default 0)')
    .option('--out <file>', 'the PNG to write')
    .example('lorakit sample --model run/unet --lora lora-5 --lora lora-7 --compose cmlora --prompt 5,7 --out grid.png')
    .action(async (flags: Flags) => {
      const { LorakitError } = await import('../errors.ts');
      const modelDir = requiredFlag('model', flags.model, 'a UNet2DConditionModel folder');
      const out = requiredFlag('out', flags.out, 'the PNG file to write', '<file>');
      const loras = flags.lora === undefined ? [] : (Array.isArray(flags.lora) ? flags.lora : [flags.lora]).map(String);
      const { COMPOSE_METHODS, sampleComposed } = await import('../serve/diffusion-compose.ts');
      const method = String(flags.compose ?? 'merge');
      const methods = [...COMPOSE_METHODS, 'cmlora-freq'];
      if (!methods.includes(method))
        throw new LorakitError('LK_INVALID_ARGUMENT', `--compose must be one of ${methods.join(', ')}, got ${method}`, {
          option: 'compose',
        });
      const sampler = String(flags.sampler ?? 'ddim');
      if (sampler !== 'ddim' && sampler !== 'ddpm')
        throw new LorakitError('LK_INVALID_ARGUMENT', `--sampler must be ddim or ddpm, got ${sampler}`, {
          option: 'sampler',
        });
      const n = intFlag('n', flags.n) ?? 8;
      const steps = intFlag('steps', flags.steps) ?? 50;
      const seed = intFlag('seed', flags.seed, 0) ?? 0;
      const guidance = numberFlag('guidance', flags.guidance) ?? 3;
      const { existsSync, readFileSync, writeFileSync } = await import('node:fs');
      const { join } = await import('node:path');
      const { loadUNetCondition, noiseSchedule } = await import('../models/index.ts');
      const { PeftModel, loadAdapter } = await import('../peft/index.ts');
      const { CANVAS, oneHotStates, promptKindOf, promptStates } = await import('../train/digit-canvas.ts');
      const { cmloraFrequencyOrder, cmloraFrequencyScore } = await import('../serve/cmlora-frequency.ts');
      const { canvasGridPng } = await import('./png.ts');
      const { shutdownRuntime } = await import('../runtime/index.ts');
      const unet = await loadUNetCondition(modelDir);
      try {
        const c = unet.config;
        const kind = promptKindOf(modelDir, c.cross_attention_dim);
        // the token vocabulary: the one-hot width, less the position columns of a positional prompt
        const V = kind === 'positional' ? c.cross_attention_dim - CANVAS.promptLength : c.cross_attention_dim;
        const ids = flags.prompt === undefined ? [V - 1, V - 1] : String(flags.prompt).split(',').map(Number);
        if (
          ids.some((t) => !Number.isInteger(t) || t < 0 || t >= V) ||
          (kind === 'positional' && ids.length !== CANVAS.promptLength)
        )
          throw new LorakitError(
            'LK_INVALID_ARGUMENT',
            `--prompt takes token ids 0..${V - 1} separated by commas` +
              (kind === 'positional' ? `, ${CANVAS.promptLength} of them ([left, right]: positional prompts)` : '') +
              `, got ${String(flags.prompt)}`,
            {
              option: 'prompt',
            },
          );
        const size = c.sample_size ?? 8;
        const [H, W] = Array.isArray(size) ? size : [size, size];
        const peft = new PeftModel(unet.base());
        const names = loras.map((_, i) => `lora${i}`);
        for (let i = 0; i < loras.length; i++) await loadAdapter(peft, loras[i], names[i]);
        const schedFile = join(modelDir, 'scheduler_config.json');
        const schedule = noiseSchedule(existsSync(schedFile) ? JSON.parse(readFileSync(schedFile, 'utf8')) : {});
        const prompt = Array.from({ length: n }, () => ids).flat();
        const states = (t: number[]) => (kind === 'set' ? oneHotStates(t, V) : promptStates(t, kind));
        const draw = (adapters: string[], m: (typeof COMPOSE_METHODS)[number], split?: { highCount: number }) =>
          sampleComposed({
            unet,
            peft,
            adapters,
            method: m,
            schedule,
            batch: n,
            states: states(prompt),
            nullStates: states(prompt.map(() => V - 1)),
            sampleShape: [c.in_channels, H, W],
            guidance,
            steps,
            sampler,
            seed,
            split,
          });
        let x: Float32Array;
        if (method === 'cmlora-freq') {
          // CMLoRA's frequency order: each LoRA alone on this prompt, scored by its samples' high-frequency tail
          const scores: number[] = [];
          for (const name of names)
            scores.push(cmloraFrequencyScore(await draw([name], 'merge'), [n, c.in_channels, H, W]));
          const o = cmloraFrequencyOrder(scores);
          console.log(
            `frequency scores: ${loras.map((l, i) => `${l} ${scores[i].toFixed(4)}`).join(', ')}; ` +
              `order ${o.order.map((i) => loras[i]).join(', ')} (${o.highCount} high)`,
          );
          x = await draw(
            o.order.map((i) => names[i]),
            'cmlora',
            { highCount: o.highCount },
          );
        } else x = await draw(names, method as (typeof COMPOSE_METHODS)[number]);
        writeFileSync(out, canvasGridPng([x], { height: H, width: W, scale: 4 }));
        console.log(`wrote ${n} samples (${method}, ${loras.length} LoRA(s), ${steps} ${sampler} steps) to ${out}`);
      } finally {
        await unet.close();
        await shutdownRuntime();
      }
    });
};
