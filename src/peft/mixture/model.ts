/**
 * A LoRA mixture on a base model: the config, one expert stack per targeted Linear, their values on the host, the
 * hooks that put the routed experts into a model graph (ReMix's sampled or top-k routing, LoRA-Mixer's hard domain or
 * soft top-k routing), and the folder format:
 *
 *   <dir>/mixture_config.json         the config (config.ts) + `mixture_type` ("REMIX" | "LORA_MIXER"), the modules
 *                                     ({path, in, out}) and `base_model_name_or_path`
 *   <dir>/mixture_model.safetensors   per module `<path>.experts_A` [E, r, in], `<path>.experts_B` [E, out, r],
 *                                     `<path>.router` [E, in], F32
 *
 * PEFT has no equivalent (its MoE-style adapters do not route LoRAs), so this is lorakit's own layout.
 * Not here: the routing ops (remix.ts, lora-mixer.ts), the training loop (demo/mixture.ts).
 */
import { LorakitError } from '../../errors.ts';
import type { Graph, Tensor } from '../../graph/index.ts';
import { join, mkdir, readFile } from '../../io/host.ts';
import { SafetensorsFile, writeFileAtomic, writeSafetensors } from '../../io/index.ts';
import type { ModuleHooks, ModuleInfo } from '../../nn/index.ts';
import { readLora } from '../compose/lora-folder.ts';
import { expertScale, isTargeted, type MixtureConfig, parseMixtureConfig } from './config.ts';
import { expertTerm, initStack, STACK_TENSORS, type StackDims, stackShapes } from './experts.ts';
import { mixerRoute, type RslParts, routingSpecialisationLoss } from './lora-mixer.ts';
import { remixRoute } from './remix.ts';

/** A targeted module of the base. */
export interface MixtureModule {
  path: string;
  in: number;
  out: number;
}

/** How a graph routes: ReMix sampled (train) or top-k (infer); LoRA-Mixer hard by domain or soft top-k. */
export type RouteMode = 'sample' | 'top_k' | 'hard' | 'soft';

/** The graph-side state of one build: the hooks and what the routed layers expose to losses and reports. */
export interface MixtureGraph {
  hooks: ModuleHooks;
  /** Every expert tensor as a graph input, by name (`<path>.experts_A` …). */
  inputs: Map<string, Tensor>;
  /** ReMix sampling: the Gumbel-noise inputs, one [N, E] per routed module, in model order. */
  noise: { name: string; shape: number[] }[];
  /** ReMix sampling: each routed layer's per-row (sequence) log Q, [B]. */
  logQ: Tensor[];
  /** LoRA-Mixer soft routing: each routed layer's RSL parts. */
  rsl: RslParts[];
  /** Each routed layer's router probabilities [N, E] (for reports). */
  probs: Tensor[];
  /** Each routed layer's routing weights [N, E] as applied (before the scale), for the effective support size. */
  weights: Tensor[];
}

const CONFIG_FILE = 'mixture_config.json';
const WEIGHTS_FILE = 'mixture_model.safetensors';
const TYPE = { remix: 'REMIX', lora_mixer: 'LORA_MIXER' } as const;

/** See the file header. */
export class MixtureModel {
  private constructor(
    readonly config: MixtureConfig,
    readonly modules: readonly MixtureModule[],
    readonly values: Map<string, Float32Array>,
  ) {}

  /** A fresh mixture on the base's targeted Linear modules (experts start at ΔW = 0). */
  static create(config: MixtureConfig, baseModules: readonly ModuleInfo[]): MixtureModel {
    const modules: MixtureModule[] = [];
    for (const m of baseModules) {
      if (m.kind !== 'linear' || !isTargeted(config, m.path)) continue;
      modules.push({ path: m.path, in: m.inFeatures, out: m.outFeatures });
    }
    if (modules.length === 0)
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `mixture: target_modules ${JSON.stringify(config.target_modules)} match no Linear module of the base`,
      );
    const values = new Map<string, Float32Array>();
    for (const m of modules) {
      const init = initStack(dimsOf(config, m), m.path, config.seed, config.router_init_std);
      for (const s of STACK_TENSORS) values.set(`${m.path}.${s}`, init[s]);
    }
    return new MixtureModel(config, modules, values);
  }

  /** Reads a mixture folder (see the file header). */
  static async load(dir: string): Promise<MixtureModel> {
    const where = join(dir, CONFIG_FILE);
    let raw: Record<string, unknown>;
    try {
      raw = JSON.parse(await readFile(where, 'utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new LorakitError('LK_FILE_INVALID', `${where}: not a readable mixture config (${(e as Error).message})`);
    }
    const { mixture_type: _t, modules, base_model_name_or_path: _b, ...rest } = raw;
    const config = parseMixtureConfig(rest, where);
    if (!Array.isArray(modules))
      throw new LorakitError('LK_CONFIG_INVALID', `${where}: "modules" must be a list of {path, in, out}`);
    const mods = modules as MixtureModule[];
    const file = await SafetensorsFile.open(join(dir, WEIGHTS_FILE));
    const values = new Map<string, Float32Array>();
    try {
      for (const m of mods) {
        const shapes = stackShapes(dimsOf(config, m));
        for (const s of STACK_TENSORS) {
          const v = await file.readAs(`${m.path}.${s}`, 'f32');
          const n = shapes[s].reduce((a, b) => a * b, 1);
          if (v.length !== n)
            throw new LorakitError(
              'LK_SHAPE_MISMATCH',
              `${join(dir, WEIGHTS_FILE)}: ${m.path}.${s} has ${v.length} values, expected [${shapes[s]}]`,
            );
          values.set(`${m.path}.${s}`, v);
        }
      }
    } finally {
      await file.close();
    }
    return new MixtureModel(config, mods, values);
  }

  /** Writes the folder (see the file header). */
  async save(dir: string, baseModel = ''): Promise<void> {
    await mkdir(dir, { recursive: true });
    const tensors = this.modules.flatMap((m) => {
      const shapes = stackShapes(dimsOf(this.config, m));
      return STACK_TENSORS.map((s) => ({
        name: `${m.path}.${s}`,
        dtype: 'F32' as const,
        shape: shapes[s],
        data: this.values.get(`${m.path}.${s}`)!,
      }));
    });
    await writeSafetensors(join(dir, WEIGHTS_FILE), tensors, { format: 'pt' });
    const json = {
      mixture_type: TYPE[this.config.method],
      ...this.config,
      modules: this.modules,
      base_model_name_or_path: baseModel,
    };
    await writeFileAtomic(join(dir, CONFIG_FILE), `${JSON.stringify(json, null, 2)}\n`);
  }

  /**
   * Puts a LoRA (ΔW = scaling·B·A, A [rank, in], B [out, rank], rank ≤ r; zero-padded to r, which adds nothing) into
   * expert slot `e` of module `path`, its scale folded into B so that the mixture applies ΔW times the routing
   * weight: LoRA-Mixer's weights sum to 1 (B·scaling/s), ReMix's k active experts average (B·scaling/(ω·k)).
   */
  setExpert(path: string, e: number, a: ArrayLike<number>, b: ArrayLike<number>, scaling: number): void {
    const m = this.modules.find((x) => x.path === path);
    const { r, num_experts: E } = this.config;
    const rank = a.length / (m?.in ?? 1);
    if (!m || e < 0 || e >= E || !Number.isInteger(rank) || rank > r || b.length !== m.out * rank)
      throw new LorakitError(
        'LK_SHAPE_MISMATCH',
        `mixture: expert ${e} of ${path}: expected a module of the mixture, slot < ${E}, A [≤${r}, ${m?.in}] and ` +
          `B [${m?.out}, rank]; got ${a.length} and ${b.length} values`,
      );
    const fold =
      this.config.method === 'remix'
        ? scaling / (expertScale(this.config) * this.config.top_k)
        : scaling / expertScale(this.config);
    const A = this.values.get(`${path}.experts_A`)!;
    const B = this.values.get(`${path}.experts_B`)!;
    A.fill(0, e * r * m.in, (e + 1) * r * m.in);
    B.fill(0, e * m.out * r, (e + 1) * m.out * r);
    for (let j = 0; j < rank; j++) for (let i = 0; i < m.in; i++) A[(e * r + j) * m.in + i] = a[j * m.in + i];
    for (let o = 0; o < m.out; o++) for (let j = 0; j < rank; j++) B[(e * m.out + o) * r + j] = b[o * rank + j] * fold;
  }

  /**
   * Fills expert i of every targeted module from the i-th plain PEFT LoRA folder (composition's pool adapters); a
   * module a folder lacks keeps a zero expert.
   */
  async plugLoraFolders(dirs: readonly string[]): Promise<void> {
    if (dirs.length > this.config.num_experts)
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `mixture: ${dirs.length} LoRA folders for ${this.config.num_experts} experts per module`,
      );
    for (const [e, dir] of dirs.entries()) {
      const lora = await readLora(dir);
      for (const m of this.modules) {
        const src = lora.modules.get(m.path);
        if (!src) {
          this.setExpert(m.path, e, new Float32Array(m.in), new Float32Array(m.out), 0);
          continue;
        }
        if (src.transposed || src.in !== m.in || src.out !== m.out)
          throw new LorakitError(
            'LK_SHAPE_MISMATCH',
            `${dir}: module ${m.path} is [${src.out}, ${src.in}]${src.transposed ? ' (transposed)' : ''}, ` +
              `the base's [${m.out}, ${m.in}]`,
          );
        this.setExpert(m.path, e, src.a, src.b, src.scaling);
      }
    }
  }

  /** Names of the tensors a stage trains: ReMix its experts and/or router; LoRA-Mixer hard: experts, soft: router. */
  trainableNames(mode: RouteMode): string[] {
    const c = this.config;
    const want = new Set<string>();
    if (c.method === 'remix') {
      if (c.train_experts) want.add('experts_A').add('experts_B');
      if (c.train_router) want.add('router');
    } else if (mode === 'hard') want.add('experts_A').add('experts_B');
    else {
      want.add('router');
      if (c.train_experts_stage2) want.add('experts_A').add('experts_B');
    }
    return this.modules.flatMap((m) => STACK_TENSORS.filter((s) => want.has(s)).map((s) => `${m.path}.${s}`));
  }

  /** LoRA parameters active per token: k·r·(in + out) per module (the routers are counted apart). */
  activatedParams(): number {
    return this.modules.reduce((n, m) => n + this.config.top_k * this.config.r * (m.in + m.out), 0);
  }

  /** All expert parameters and all router parameters. */
  totalParams(): { experts: number; router: number } {
    const E = this.config.num_experts;
    return {
      experts: this.modules.reduce((n, m) => n + E * this.config.r * (m.in + m.out), 0),
      router: this.modules.reduce((n, m) => n + E * m.in, 0),
    };
  }

  /**
   * Builds the mixture into graph `g`: every stack tensor becomes an f32 graph input named as in files; the hooks add
   * the routed term to each targeted Linear. `sample` declares one Gumbel-noise input per module (rows must then be
   * static, [B, T, in]); `hard` reads the per-sequence weights [B, E] from the input `mixture.route`.
   */
  build(g: Graph, mode: RouteMode): MixtureGraph {
    const c = this.config;
    const out: MixtureGraph = { hooks: {}, inputs: new Map(), noise: [], logQ: [], rsl: [], probs: [], weights: [] };
    for (const [name, v] of this.values) out.inputs.set(name, g.input(name, 'f32', shapeOf(this, name, v)));
    const byPath = new Map(this.modules.map((m) => [m.path, m]));
    const scale = expertScale(c);
    let hard: Tensor | null = null;
    out.hooks.adapts = (path) => byPath.has(path);
    out.hooks.linear = (m, x) => {
      const mod = byPath.get(m.path);
      const y = m.base(x);
      if (!mod) return y;
      const d = dimsOf(c, mod);
      const t = {
        a: out.inputs.get(`${mod.path}.experts_A`)!,
        b: out.inputs.get(`${mod.path}.experts_B`)!,
        router: out.inputs.get(`${mod.path}.router`)!,
      };
      const rows = x.reshape([-1, d.in]).cast('f32'); // [N, in]
      let w: Tensor;
      if (mode === 'hard') {
        const [B, T] = staticLead(x, mod.path);
        hard ??= g.input('mixture.route', 'f32', [B, c.num_experts]);
        w = hard
          .unsqueeze(1)
          .expand([B, T, d.experts])
          .reshape([B * T, d.experts]); // [N, E]
      } else if (mode === 'soft') {
        if (c.method !== 'lora_mixer') throw new Error('internal: soft routing is LoRA-Mixer only');
        const r = mixerRoute(rows, t.router, c.top_k);
        out.rsl.push(
          routingSpecialisationLoss(r.p, r.mask, {
            alpha: c.rsl_alpha,
            lambda: c.rsl_lambda,
            entropySign: c.entropy_sign,
            topK: c.top_k,
          }),
        );
        out.probs.push(r.p);
        w = r.weights;
      } else {
        let noise: Tensor | null = null;
        if (mode === 'sample') {
          const [B, T] = staticLead(x, mod.path);
          const name = `mixture.noise.${mod.path}`;
          out.noise.push({ name, shape: [B * T, d.experts] });
          noise = g.input(name, 'f32', [B * T, d.experts]);
        }
        const r = remixRoute(rows, t.router, c.top_k, noise);
        if (r.logQ) {
          const [B, T] = staticLead(x, mod.path);
          out.logQ.push(r.logQ.reshape([B, T]).sum(1)); // [B]
        }
        out.probs.push(r.q);
        w = r.weights;
      }
      out.weights.push(w);
      const term = expertTerm(rows, w, t, d, scale).cast(y.dtype); // [N, out]
      const lead = y.shape;
      return y.add(
        lead.every((s) => typeof s === 'number') ? term.reshape(lead as number[]) : term.reshape(y.shapeOf(), lead),
      );
    };
    return out;
  }
}

/** The stack sizes of module `m`. */
export function dimsOf(c: MixtureConfig, m: MixtureModule): StackDims {
  return { experts: c.num_experts, r: c.r, in: m.in, out: m.out };
}

function shapeOf(model: MixtureModel, name: string, v: Float32Array): number[] {
  const dot = name.lastIndexOf('.');
  const m = model.modules.find((x) => x.path === name.slice(0, dot))!;
  const shape = stackShapes(dimsOf(model.config, m))[name.slice(dot + 1) as (typeof STACK_TENSORS)[number]];
  if (shape.reduce((a, b) => a * b, 1) !== v.length) throw new Error(`internal: ${name} has ${v.length} values`);
  return shape;
}

function staticLead(x: Tensor, path: string): [number, number] {
  const [B, T] = x.shape;
  if (x.rank !== 3 || typeof B !== 'number' || typeof T !== 'number')
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `mixture ${path}: sampled and hard routing need a static [B, T, in] input, got [${x.shape}]`,
    );
  return [B, T];
}
