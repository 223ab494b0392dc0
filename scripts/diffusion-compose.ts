/**
 * Multi-LoRA composition in diffusion at small scale (issue 18, part 3): a conditional DDPM on canvases of two
 * handwritten digits (src/train/digit-canvas.ts), one concept LoRA per new digit, and the composition methods
 * (LoRA Merge, Switch, Composite, CMLoRA with and without its frequency order; src/serve/diffusion-compose.ts; and
 * CLoRA, src/diffusion/clora.ts) scored by a digit classifier per half. The phases live in scripts/diffusion/
 * (common.ts, train.ts, compose.ts); this file only dispatches.
 *
 *   S="node --import tsx scripts/diffusion-compose.ts"
 *   $S base OUT              # base U-Net on digits 0–4 → OUT/base (DIFF_PROMPT=set|positional, default positional;
 *                            #   DIFF_BASE_FROM=DIR continues a saved U-Net; DIFF_BASE_STEPS, DIFF_BASE_LR, DIFF_BASE_BATCH)
 *   $S basecheck OUT [N]     # the base's per-half accuracy on 0–4
 *   $S concept OUT DIGIT     # concept LoRA of DIGIT → OUT/lora-DIGIT (DIFF_CONCEPT_FROM=DIR, DIFF_CONCEPT_STEPS)
 *   $S classifier OUT        # the scoring classifier → OUT/classifier.json
 *   $S singles OUT [N]       # each LoRA alone + its amplitude score
 *   $S table OUT [N]         # every pair per method (DIFF_METHODS=a,b)
 *   $S diagnose OUT [N]      # where each LoRA alone puts its digit
 *   $S report OUT            # the markdown table of OUT/table-*.json
 *   $S grid OUT PNG          # one row of the table's samples per method
 *
 * The prompt kind is saved with OUT/base (lorakit_prompt.json); every later phase reads it from there.
 * Not here: the training task (src/train/diffusion.ts), the sampler (src/models/diffusion-sampler.ts).
 */
import { resolve } from 'node:path';
import { baseCheck, diagnose, grid, report, singles, table } from './diffusion/compose.ts';
import { base, classifier, concept } from './diffusion/train.ts';

const [cmd, out, arg] = process.argv.slice(2);
if (cmd === 'base') await base(resolve(out));
else if (cmd === 'concept') await concept(resolve(out), Number(arg));
else if (cmd === 'classifier') await classifier(resolve(out));
else if (cmd === 'singles') await singles(resolve(out), Number(arg ?? 32));
else if (cmd === 'table') await table(resolve(out), Number(arg ?? 32));
else if (cmd === 'report') report(resolve(out));
else if (cmd === 'diagnose') await diagnose(resolve(out), Number(arg ?? 32));
else if (cmd === 'basecheck') await baseCheck(resolve(out), Number(arg ?? 16));
else if (cmd === 'grid') grid(resolve(out), resolve(arg));
else
  console.error(
    'usage: diffusion-compose.ts base|basecheck|concept|classifier|singles|table|diagnose|report|grid OUT ...',
  );
