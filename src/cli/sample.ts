// `lorakit sample`: draws images from a diffusion U-Net folder with zero or more LoRAs composed by one method
// (serve/diffusion-compose.ts) and writes them as one PNG grid (cli/png.ts). Prompts are token ids of the model's
// one-hot prompt vocabulary (for the digit-canvas models: digits 0–9, 10 empty, 11 null).
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
    .option('--compose <method>', 'merge, switch, composite or cmlora (default merge)')
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
      if (!(COMPOSE_METHODS as readonly string[]).includes(method))
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          `--compose must be one of ${COMPOSE_METHODS.join(', ')}, got ${method}`,
          {
            option: 'compose',
          },
        );
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
      const { oneHotStates } = await import('../train/digit-canvas.ts');
      const { canvasGridPng } = await import('./png.ts');
      const { shutdownRuntime } = await import('../runtime/index.ts');
      const unet = await loadUNetCondition(modelDir);
      try {
        const c = unet.config;
        const V = c.cross_attention_dim;
        const ids = flags.prompt === undefined ? [V - 1, V - 1] : String(flags.prompt).split(',').map(Number);
        if (ids.some((t) => !Number.isInteger(t) || t < 0 || t >= V))
          throw new LorakitError(
            'LK_INVALID_ARGUMENT',
            `--prompt takes token ids 0..${V - 1} (cross_attention_dim ${V}) separated by commas, ` +
              `got ${String(flags.prompt)}`,
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
        const x = await sampleComposed({
          unet,
          peft,
          adapters: names,
          method: method as (typeof COMPOSE_METHODS)[number],
          schedule,
          batch: n,
          states: oneHotStates(prompt, V),
          nullStates: oneHotStates(
            prompt.map(() => V - 1),
            V,
          ),
          sampleShape: [c.in_channels, H, W],
          guidance,
          steps,
          sampler,
          seed,
        });
        writeFileSync(out, canvasGridPng([x], { height: H, width: W, scale: 4 }));
        console.log(`wrote ${n} samples (${method}, ${loras.length} LoRA(s), ${steps} ${sampler} steps) to ${out}`);
      } finally {
        await unet.close();
        await shutdownRuntime();
      }
    });
};
