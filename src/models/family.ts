/**
 * What a model family file declares so the loader can open any checkpoint of it: the parameters the config
 * implies (names and shapes, checked against the file before any graph is built), the Linear/Conv1D/Embedding
 * (and Conv2d) modules (the adapter targets), and the alternative names older checkpoints store a tensor under.
 */
import { type ModuleInfo, conv2dWeightShape } from '../nn/index.ts';
import type { CacheSpec } from './causal.ts';

/** A tensor the model reads. `optional` ones (a task head) may be absent from the file when trained or overridden. */
export interface ParamSpec {
  name: string;
  shape: number[];
  optional?: boolean;
}

export type FamilyName = 'gpt2' | 'llama' | 'bert';

export interface Family<C> {
  name: FamilyName;
  /** Every tensor the model reads, tied weights once. */
  parameters(config: C): ParamSpec[];
  /** Every Linear, Conv1D and Embedding, in forward order. */
  modules(config: C): ModuleInfo[];
  /** Names under which a file may store the HF tensor `name`, in order of preference (the first is `name`). */
  fileNames(name: string): string[];
  /** KV cache sizes (causal LMs only). */
  cache?(config: C): CacheSpec;
}

/** The weight and bias tensors of `modules` (shared names once), then `extra` (norms and other loose tensors). */
export function parametersOf(
  modules: readonly ModuleInfo[],
  extra: ParamSpec[],
  optionalPrefixes: string[] = [],
): ParamSpec[] {
  const out = new Map<string, ParamSpec>();
  const optional = (name: string) => optionalPrefixes.some((p) => name.startsWith(p));
  const add = (name: string, shape: number[]) => {
    if (!out.has(name)) out.set(name, { name, shape, ...(optional(name) ? { optional: true } : {}) });
  };
  for (const m of modules) {
    if (m.kind === 'embedding') add(m.weightName, [m.numEmbeddings, m.dim]);
    else if (m.kind === 'conv2d') {
      add(m.weightName, conv2dWeightShape(m));
      if (m.biasName) add(m.biasName, [m.outChannels]);
    } else {
      add(m.weightName, m.kind === 'conv1d' ? [m.inFeatures, m.outFeatures] : [m.outFeatures, m.inFeatures]);
      if (m.biasName) add(m.biasName, [m.outFeatures]);
    }
  }
  for (const p of extra) add(p.name, p.shape);
  return [...out.values()];
}

/** A Linear module entry with weight `<path>.weight` and, with `bias`, `<path>.bias`. */
export function linearInfo(
  path: string,
  inFeatures: number,
  outFeatures: number,
  bias: boolean,
  kind: 'linear' | 'conv1d' = 'linear',
  weightName = `${path}.weight`,
): ModuleInfo {
  return { kind, path, inFeatures, outFeatures, weightName, biasName: bias ? `${path}.bias` : null };
}

/**
 * The output head `lm_head` [V, D]: a tied checkpoint (GPT-2, SmolLM, Llama 3.2 1B) stores no lm_head.weight, and the
 * head reads the embedding matrix `embeddingWeight` instead.
 */
export function lmHeadInfo(hidden: number, vocab: number, tied: boolean, embeddingWeight: string): ModuleInfo {
  return linearInfo('lm_head', hidden, vocab, false, 'linear', tied ? embeddingWeight : 'lm_head.weight');
}

/** An Embedding module entry with weight `<path>.weight`. */
export function embeddingInfo(path: string, numEmbeddings: number, dim: number): ModuleInfo {
  return { kind: 'embedding', path, numEmbeddings, dim, weightName: `${path}.weight` };
}
