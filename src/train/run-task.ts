/**
 * Which trainer a run config is for: its top-level `task` key — `segmentation` (a U-Net adapter scored by Dice,
 * train/segmentation-run.ts), `diffusion` (a diffusion U-Net or a concept LoRA, train/diffusion-run.ts) — or, without
 * one, the causal-LM trainer (train/config.ts). Only the key is read here; each trainer validates the rest.
 */
import { parse as parseYaml } from 'yaml';
import { existsSync, readFileSync, statSync } from '../io/host.ts';

/** The trainers a run config can name. */
export type RunTask = 'causal_lm' | 'segmentation' | 'diffusion';

/**
 * The task of the run config at `file`. A file that is missing, a folder or not YAML counts as `causal_lm`: its loader
 * reports the problem with the file and the line.
 */
export function runTaskOf(file: string): RunTask {
  if (!existsSync(file) || statSync(file).isDirectory()) return 'causal_lm';
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(file, 'utf8'));
  } catch {
    return 'causal_lm';
  }
  const task = typeof raw === 'object' && raw !== null ? (raw as { task?: unknown }).task : undefined;
  return task === 'segmentation' || task === 'diffusion' ? task : 'causal_lm';
}
