/**
 * Neural Organ Transplantation (NOT; Al-Zuraiqi, arXiv 2601.13580): a contiguous block of k decoder layers (the
 * "donor organ", by default k = 3 from s = ⌊L/3⌋ as the paper recommends, fewer when the model is shallower) is cut
 * out of a pre-trained model, trained alone inside a wrapper Embed ∘ O ∘ Head whose embedding, final norm and head
 * are frozen copies from the base (the paper's standalone training), saved as a checkpoint of those layers only
 * (organ.safetensors + organ.json), and inserted into a recipient of the same architecture and width at position p:
 * the recipient's layers 0..p−1, then the organ, then the recipient's layers p..L−1 (additive insertion, L + k
 * layers; the spec marks "insert, not replace" as a reconstruction). The result is an ordinary model folder.
 * `dropLayers` removes layers instead (a depth-pruned second base of the same family and width).
 * Llama-family models only (layers are `model.layers.<i>.`). Not here: the report (scripts/transfer.ts), flags.
 */
import { LorakitError } from '../../errors.ts';
import { Graph } from '../../graph/index.ts';
import { copyFile, existsSync, join, mkdir } from '../../io/host.ts';
import {
  type ModelConfig,
  SafetensorsFile,
  parseModelConfig,
  readJsonFile,
  writeFileAtomic,
  writeSafetensors,
} from '../../io/index.ts';
import { type LoadedModel, familyOf, memoryContext } from '../../models/index.ts';
import { type Optimizer, TrainStepRunner, adamw, addTrainStep } from '../../optim/index.ts';
import { type CompileOptions, type Feed, compile } from '../../runtime/index.ts';
import { causalLmLoss } from '../loss.ts';

/** A donor organ: k consecutive layers renamed `model.layers.0..k−1.*`, and where and what they came from. */
export interface Organ {
  /** The donor's config.json (as read), whose layer count is the donor's, not k. */
  donorConfig: Record<string, unknown>;
  /** First donor layer and the number of layers. */
  start: number;
  count: number;
  weights: Map<string, Float32Array>;
}

const LAYER = /^model\.layers\.(\d+)\.(.+)$/;
const LLAMA_TYPES = ['llama', 'mistral', 'qwen2'];

/** The paper's default block: 3 layers from ⌊L/3⌋, shortened to fit (at least 1 layer). */
export function defaultOrganSpan(layers: number): { start: number; count: number } {
  const start = Math.floor(layers / 3);
  return { start, count: Math.max(1, Math.min(3, layers - start)) };
}

/** Every stored weight of `model` by HF name, as float32. */
export async function readAllWeights(model: LoadedModel): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const p of model.parameters()) out.set(p.name, await model.read(p.name));
  return out;
}

/** The layer count of a Llama-family config, or an error naming the model type. */
function layerCount(config: ModelConfig | Record<string, unknown>, where: string): number {
  const type = String((config as { model_type?: unknown }).model_type);
  if (!LLAMA_TYPES.includes(type))
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `${where}: organ transplantation supports Llama-family models (${LLAMA_TYPES.join(', ')}), got "${type}"`,
    );
  return Number((config as { num_hidden_layers: number }).num_hidden_layers);
}

/** Cuts layers start..start+count−1 out of `weights` (a model with `config`), renamed from 0. */
export function extractOrgan(
  config: Record<string, unknown>,
  weights: ReadonlyMap<string, Float32Array>,
  start: number,
  count: number,
): Organ {
  const L = layerCount(config, 'extractOrgan');
  if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 1 || start + count > L)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `extractOrgan: layers ${start}..${start + count - 1} do not fit a model of ${L} layers`,
    );
  const out = new Map<string, Float32Array>();
  for (const [name, v] of weights) {
    const m = LAYER.exec(name);
    if (!m) continue;
    const i = Number(m[1]);
    if (i >= start && i < start + count) out.set(`model.layers.${i - start}.${m[2]}`, Float32Array.from(v));
  }
  return { donorConfig: { ...config }, start, count, weights: out };
}

/** The config of a model with `layers` layers and otherwise `config` (the wrapper, or the transplanted model). */
export function withLayers(config: Record<string, unknown>, layers: number): Record<string, unknown> {
  return { ...config, num_hidden_layers: layers };
}

/**
 * Inserts `organ` into a recipient (`config`, `weights`) before its layer `position` (0 = before the first, L =
 * after the last). Shapes must match layer for layer: same family and width. Returns the new config and weights.
 */
export function transplant(
  config: Record<string, unknown>,
  weights: ReadonlyMap<string, Float32Array>,
  organ: Organ,
  position: number,
): { config: Record<string, unknown>; weights: Map<string, Float32Array> } {
  const L = layerCount(config, 'transplant');
  if (!Number.isInteger(position) || position < 0 || position > L)
    throw new LorakitError('LK_INVALID_ARGUMENT', `transplant: position must be 0..${L}, got ${position}`);
  const k = organ.count;
  const out = new Map<string, Float32Array>();
  for (const [name, v] of weights) {
    const m = LAYER.exec(name);
    if (!m) out.set(name, v);
    else {
      const i = Number(m[1]);
      out.set(`model.layers.${i < position ? i : i + k}.${m[2]}`, v);
    }
  }
  for (const [name, v] of organ.weights) {
    const m = LAYER.exec(name)!;
    const target = `model.layers.${Number(m[1]) + position}.${m[2]}`;
    const like = weights.get(`model.layers.${Math.min(position, L - 1)}.${m[2]}`);
    if (!like || like.length !== v.length)
      throw new LorakitError(
        'LK_SHAPE_MISMATCH',
        `transplant: organ tensor ${name} has ${v.length} values but the recipient's ${m[2]} has ` +
          `${like ? like.length : 'no such tensor'}; the recipient must have the donor's architecture and width ` +
          `(hidden_size ${organ.donorConfig.hidden_size} vs ${config.hidden_size})`,
      );
    out.set(target, v);
  }
  return { config: withLayers(config, L + k), weights: out };
}

/**
 * Removes the layers `drop` (indices of the model's 0..L−1, any order) and renumbers the rest from 0, keeping their
 * order: the pruned base of a depth-pruning method such as ShortGPT (Men et al., arXiv 2403.03853), whose rule for
 * which layers to drop lives with the caller. Returns the new config and weights (tensors shared, not copied).
 */
export function dropLayers(
  config: Record<string, unknown>,
  weights: ReadonlyMap<string, Float32Array>,
  drop: readonly number[],
): { config: Record<string, unknown>; weights: Map<string, Float32Array> } {
  const L = layerCount(config, 'dropLayers');
  const gone = new Set(drop);
  if (drop.some((i) => !Number.isInteger(i) || i < 0 || i >= L) || gone.size !== drop.length || gone.size >= L)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `dropLayers: layers to drop must be distinct indices in 0..${L - 1} leaving at least one, ` +
        `got [${drop.join(', ')}]`,
    );
  const renumber = new Map<number, number>();
  for (let i = 0, j = 0; i < L; i++) if (!gone.has(i)) renumber.set(i, j++);
  const out = new Map<string, Float32Array>();
  for (const [name, v] of weights) {
    const m = LAYER.exec(name);
    if (!m) out.set(name, v);
    else if (renumber.has(Number(m[1]))) out.set(`model.layers.${renumber.get(Number(m[1]))}.${m[2]}`, v);
  }
  return { config: withLayers(config, L - gone.size), weights: out };
}

/** Options of `trainOrgan`. */
export interface TrainOrganOptions {
  /** The base whose embedding, final norm and head wrap the organ (frozen). */
  base: LoadedModel;
  organ: Organ;
  /** Batch `i`: input_ids [B·T] and next-token labels [B·T] (i64, IGNORE = -100), deterministic in i. */
  batch(i: number): { input_ids: Feed; labels: Feed };
  batchSize: number;
  seqLen: number;
  steps: number;
  /** Peak lr (linear warmup over 10 %, then cosine to 10 %), AdamW by default (weight decay 0). */
  lr: number;
  optimizer?: Optimizer;
  compile?: CompileOptions;
  onStep?: (step: number, loss: number) => void;
}

/** Trains the organ's layers inside Embed ∘ O ∘ Head (everything else frozen); returns the trained organ. */
export async function trainOrgan(o: TrainOrganOptions): Promise<Organ> {
  layerCount(o.base.config, 'trainOrgan');
  if (Number(o.organ.donorConfig.hidden_size) !== Number((o.base.config as { hidden_size: number }).hidden_size))
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `trainOrgan: the organ is ${o.organ.donorConfig.hidden_size} wide, the wrapping base ${o.base.dir} is ` +
        `${(o.base.config as { hidden_size: number }).hidden_size}`,
    );
  const config = parseModelConfig(withLayers(o.organ.donorConfig, o.organ.count), 'organ wrapper config');
  const frozen = new Map<string, Float32Array>();
  for (const p of o.base.parameters()) if (!LAYER.test(p.name)) frozen.set(p.name, await o.base.read(p.name));
  const names = [...o.organ.weights.keys()];
  const g = new Graph('organ-train');
  const ctx = memoryContext(config, g, { trainable: names, overrides: frozen });
  const inputIds = g.input('input_ids', 'i64', [o.batchSize, o.seqLen]);
  const labels = g.input('labels', 'i64', [o.batchSize * o.seqLen]);
  const { loss } = causalLmLoss({ ctx, inputIds, labels, labelsAre: 'next' });
  const params = [...ctx.weights.inputs.values()];
  const layout = addTrainStep(g, loss, {
    optimizer: o.optimizer ?? adamw({ beta1: 0.9, beta2: 0.999, eps: 1e-8 }),
    groups: [{ params, weightDecay: 0 }],
    clipNorm: 1,
  });
  const runner = new TrainStepRunner(await compile(g, o.compile), layout, Object.fromEntries(o.organ.weights));
  try {
    const warm = Math.max(1, Math.round(o.steps / 10));
    for (let s = 0; s < o.steps; s++) {
      const p = Math.min(1, (s - warm) / Math.max(1, o.steps - warm));
      const mult = s < warm ? (s + 1) / warm : 0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI * p));
      const m = await runner.step(o.batch(s), o.lr * mult);
      o.onStep?.(s + 1, m.loss);
    }
    return { ...o.organ, weights: new Map(names.map((n) => [n, Float32Array.from(runner.param(n))])) };
  } finally {
    await runner.dispose(); // the session's arena (a training step's activations) would outlive the organ
  }
}

/** Writes organ.safetensors (the layers only) and organ.json (donor config, start, count) into `dir`. */
export async function saveOrgan(dir: string, organ: Organ): Promise<void> {
  await mkdir(dir, { recursive: true });
  const tensors = [...organ.weights].map(([name, data]) => ({
    name,
    dtype: 'F32' as const,
    shape: [data.length],
    data,
  }));
  await writeSafetensors(join(dir, 'organ.safetensors'), tensors);
  const meta = { donor_config: organ.donorConfig, start: organ.start, count: organ.count };
  await writeFileAtomic(join(dir, 'organ.json'), `${JSON.stringify(meta, null, 2)}\n`);
}

/** Reads an organ folder written by saveOrgan (shapes come from the donor config). */
export async function loadOrgan(dir: string): Promise<Organ> {
  const meta = (await readJsonFile(join(dir, 'organ.json'))) as {
    donor_config?: Record<string, unknown>;
    start?: number;
    count?: number;
  };
  if (!meta.donor_config || !Number.isInteger(meta.start) || !Number.isInteger(meta.count))
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `${join(dir, 'organ.json')}: expected {donor_config, start, count}, got keys ${Object.keys(meta).join(', ')}`,
    );
  const st = await SafetensorsFile.open(join(dir, 'organ.safetensors'));
  const weights = new Map<string, Float32Array>();
  try {
    for (const name of st.names()) weights.set(name, await st.readAs(name, 'f32'));
  } finally {
    await st.close();
  }
  return { donorConfig: meta.donor_config, start: meta.start!, count: meta.count!, weights };
}

/**
 * Writes the transplanted model as a Hugging Face folder: config.json with the new layer count, model.safetensors
 * with the recipient's shapes, and the recipient's tokenizer and generation files copied unchanged.
 */
export async function writeTransplant(
  recipient: LoadedModel,
  organ: Organ,
  position: number,
  outDir: string,
): Promise<void> {
  const rawConfig = (await readJsonFile(join(recipient.dir, 'config.json'))) as Record<string, unknown>;
  await writeLayerEdit(recipient, transplant(rawConfig, await readAllWeights(recipient), organ, position), outDir);
}

/** Writes `model` without the layers `drop` (dropLayers) as a Hugging Face folder, as writeTransplant does. */
export async function writeDropped(model: LoadedModel, drop: readonly number[], outDir: string): Promise<void> {
  const rawConfig = (await readJsonFile(join(model.dir, 'config.json'))) as Record<string, unknown>;
  await writeLayerEdit(model, dropLayers(rawConfig, await readAllWeights(model), drop), outDir);
}

/** The folder of a model whose layers were edited (inserted or dropped): `from`'s files with the new weights. */
async function writeLayerEdit(
  from: LoadedModel,
  r: { config: Record<string, unknown>; weights: ReadonlyMap<string, Float32Array> },
  outDir: string,
): Promise<void> {
  const config = parseModelConfig(r.config, 'edited config');
  await mkdir(outDir, { recursive: true });
  const tensors = familyOf(config)
    .parameters(config)
    .map((p) => {
      const data = r.weights.get(p.name);
      if (!data) throw new Error(`internal: the edited model has no value for ${p.name}`);
      return { name: p.name, dtype: 'F32' as const, shape: p.shape, data };
    });
  await writeSafetensors(join(outDir, 'model.safetensors'), tensors, { format: 'pt' });
  await writeFileAtomic(join(outDir, 'config.json'), `${JSON.stringify(r.config, null, 2)}\n`);
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'])
    if (existsSync(join(from.dir, f))) await copyFile(join(from.dir, f), join(outDir, f));
}
