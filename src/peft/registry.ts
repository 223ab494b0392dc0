/**
 * From an adapter config to the method that runs it: the method named by `peft_type` (PEFT's name, or lorakit's
 * registry name for methods PEFT does not have), its config validated strictly against the method's fields, the
 * targeting fields and the fields of every variant of that method, and the variants the config asks for, composed
 * into one `AdapterMethod`. Composition is the only place where variants meet their method, so adding a variant
 * never edits the method's file.
 * Not here: the list itself (methods/index.ts), what the hooks do (methods/), how adapters are applied (model.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../errors.ts';
import type { Tensor } from '../graph/index.ts';
import { parseWith, peftCommonFields, type Targeting, targetingSchema } from './config.ts';
import type {
  AdapterMethod,
  ForwardContext,
  InitResult,
  LayerValues,
  LayerUpdateRule,
  LossTerm,
  MethodVariant,
  RegistryEntry,
  StepInputSpec,
} from './method.ts';
import { isVariant } from './method.ts';
import { REGISTRY } from './methods/index.ts';

/** The registered methods, in registry order. */
export function methods(registry: readonly RegistryEntry[] = REGISTRY): AdapterMethod[] {
  return registry.filter((e): e is AdapterMethod => !isVariant(e));
}

/** The registered variants that can modify `method`. */
export function variantsOf(method: AdapterMethod, registry: readonly RegistryEntry[] = REGISTRY): MethodVariant[] {
  return registry.filter((e): e is MethodVariant => isVariant(e) && (e.of === '*' || e.of.includes(method.name)));
}

/** The peft_type a method is saved under: PEFT's, or its upper-cased registry name. */
export const savedType = (m: AdapterMethod): string => m.peftType ?? m.name.toUpperCase();

/** The method whose peft_type (or registry name, any case) is `type`. */
export function methodFor(type: string, registry: readonly RegistryEntry[] = REGISTRY): AdapterMethod | undefined {
  const t = type.toLowerCase();
  return methods(registry).find((m) => savedType(m).toLowerCase() === t || m.name === t);
}

/** A config resolved to its composed method. */
export interface Resolved {
  /** The method with its applicable variants composed in (the plain method when none applies). */
  method: AdapterMethod;
  /** The method itself and the variants that apply, in registry order. */
  base: AdapterMethod;
  variants: MethodVariant[];
  /** The validated config with defaults filled. */
  config: Targeting & Record<string, any>;
}

/** The strict schema of a method's configs: targeting + PEFT's common fields + the method's + its variants'. */
export function configSchema(method: AdapterMethod, registry: readonly RegistryEntry[] = REGISTRY) {
  let shape: z.ZodRawShape = { ...targetingSchema.shape, ...peftCommonFields, ...method.fields };
  for (const v of variantsOf(method, registry)) shape = { ...shape, ...v.fields };
  return z.strictObject(shape);
}

/** Validates an adapter config and composes its method; errors name `source` and the field. */
export function resolveConfig(json: unknown, source: string, registry: readonly RegistryEntry[] = REGISTRY): Resolved {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new LorakitError('LK_CONFIG_INVALID', `${source}: expected an object with PEFT config fields`);
  }
  const type = String((json as { peft_type?: unknown }).peft_type ?? 'LORA');
  const base = methodFor(type, registry);
  if (!base) {
    const known = methods(registry).map(savedType).join(', ');
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `${source}: peft_type "${type}" is not supported; lorakit supports ${known}`,
    );
  }
  const config: Resolved['config'] = parseWith(
    configSchema(base, registry),
    { ...json, peft_type: savedType(base) },
    source,
  ) as Resolved['config'];
  for (const field of base.peftLacks ?? []) {
    if (config[field] === null || config[field] === undefined) continue;
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `${source}: ${field} = ${JSON.stringify(config[field])} is not supported by ${base.name}: PEFT's ` +
        `${savedType(base)} config has no ${field} field and would ignore it when loading the adapter; remove it`,
      { field },
    );
  }
  base.check?.(config, source);
  const registered = variantsOf(base, registry);
  const variants = registered.filter((v) => v.applies(config));
  for (const [field, { own, describe }] of Object.entries(base.openFields ?? {})) {
    if (own(config[field]) || variants.some((v) => v.claims?.field === field)) continue;
    const claimed = registered.filter((v) => v.claims?.field === field).map((v) => v.claims!.describe);
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `${source}: ${field} = ${JSON.stringify(config[field])} is not supported; expected ${[describe, ...claimed].join(', ')}`,
      { field },
    );
  }
  for (const v of variants) v.check?.(config, source);
  return { method: variants.length ? compose(base, variants) : base, base, variants, config };
}

/**
 * The config as it is written to adapter_config.json: training-only variant fields, the fields of variants the config
 * does not ask for (inert: PEFT ignores lora_ga_config unless init_lora_weights is "lora_ga", and PEFT versions
 * without the variant warn about them — a LoRA-GA adapter converted to a plain LoRA keeps none) and the shared fields
 * PEFT's config of the method lacks are left out.
 */
export function savedConfig(r: Pick<Resolved, 'base' | 'config'>, registry = REGISTRY): Record<string, unknown> {
  const registered = variantsOf(r.base, registry);
  const drop = new Set([
    ...registered.flatMap((v) => v.trainingOnly ?? []),
    ...registered.filter((v) => !v.applies(r.config)).flatMap((v) => Object.keys(v.fields ?? {})),
    ...(r.base.peftLacks ?? []),
  ]);
  return Object.fromEntries(Object.entries(r.config).filter(([k, v]) => !drop.has(k) && v !== undefined));
}

/**
 * Whether a method can merge: it has a ΔW, or a merged weight that is not W0 + ΔW (MiSS's "bat" mode, nonlinear in
 * W0, has only the latter).
 */
export const canMerge = (m: AdapterMethod): boolean => m.delta !== undefined || m.merge !== undefined;

/** The one hook among `hooks` (named by their owners), or an error when two entries both define it. */
function single<T>(what: string, owners: readonly { name: string; hook: T | undefined }[]): T | undefined {
  const defined = owners.filter((o) => o.hook !== undefined);
  if (defined.length > 1) {
    const names = defined.map((o) => o.name).join(' and ');
    throw new LorakitError('LK_CONFIG_INVALID', `${names} both replace the ${what}; they cannot be combined`);
  }
  return defined[0]?.hook;
}

/** `method` with `variants` composed in: one AdapterMethod whose hooks call the variants' in registry order. */
export function compose(method: AdapterMethod, variants: readonly MethodVariant[]): AdapterMethod {
  const all = [method, ...variants];
  const one = <T>(what: string, hook: (v: MethodVariant) => T | undefined) =>
    single(
      what,
      variants.map((v) => ({ name: v.name, hook: hook(v) })),
    );
  const forward = one('forward', (v) => v.forward);
  const merge = one('merge', (v) => v.merge);
  const delta = one('ΔW', (v) => v.delta) ?? method.delta;
  const convertToBase = one('conversion to a plain LoRA', (v) => v.convertToBase) ?? method.convertToBase;
  const update = single<LayerUpdateRule<any, any>>(
    'update rule',
    all.map((e) => ({ name: e.name, hook: e.update })),
  );
  const unmergeable = variants.find((v) => v.unmergeable);
  const layers = variants.reduce((ks, v) => (v.layers ? ks.filter((k) => v.layers!.includes(k)) : ks), method.layers);
  const composed: AdapterMethod = {
    ...method,
    name: [method.name, ...variants.map((v) => v.name)].join('+'),
    layers,
    params(layer, s, c) {
      let specs = method.params(layer, s, c);
      for (const v of variants) {
        specs = [...specs, ...(v.params?.(layer, s, c) ?? [])];
        specs = v.adjustParams?.(specs, layer, s, c) ?? specs;
      }
      return specs;
    },
    async init(ctx) {
      let r: InitResult = await method.init(ctx);
      let base = r.base;
      for (const v of variants) {
        if (!v.init) continue;
        const readBase = base ? async () => base! : ctx.readBase;
        const next = await v.init({ ...ctx, readBase, values: r.values });
        base = next.base ?? base;
        r = { values: { ...r.values, ...next.values }, base };
      }
      return r;
    },
    forward(ctx: ForwardContext<any, any>): Tensor {
      if (!forward) return method.forward(ctx);
      if (!method.parts)
        throw new Error(`internal: ${method.name} has variants that replace its forward but no parts()`);
      return forward(ctx, lazyParts(method, ctx));
    },
    trainableCount: (c, ls) =>
      method.trainableCount(c, ls) + variants.reduce((n, v) => n + (v.trainableCount?.(c, ls) ?? 0), 0),
    stepInputs: (c, ls) => all.flatMap((e): StepInputSpec<any>[] => e.stepInputs?.(c, ls) ?? []),
    lossTerms: (c) => all.flatMap((e): LossTerm<any>[] => e.lossTerms?.(c) ?? []),
    calibration: (c, loading) =>
      single(
        'calibration',
        all.map((e) => ({ name: e.name, hook: e.calibration?.(c, loading) ?? undefined })),
      ) ?? null,
    update,
    convertToBase,
    checkLayer(layer, s, c, source) {
      for (const e of all) e.checkLayer?.(layer, s, c, source);
    },
    unmergeableLayer: (layer, s, c) =>
      all.map((e) => e.unmergeableLayer?.(layer, s, c) ?? null).find((why) => why !== null) ?? null,
  };
  delete composed.delta;
  delete composed.merge;
  if (unmergeable) composed.unmergeable = `${unmergeable.name}: ${unmergeable.unmergeable}`;
  else if (merge) {
    if (!delta) throw new Error(`internal: ${method.name} has a variant that replaces its merge but no ΔW`);
    composed.delta = delta;
    composed.merge = (v, w0) => merge(v, w0, delta(v));
  } else {
    if (delta) composed.delta = delta;
    if (method.merge) composed.merge = method.merge;
  }
  if (!convertToBase) delete composed.convertToBase;
  return composed;
}

/**
 * The method's `parts` for a variant's forward, built on first access: a variant that computes its own term from
 * factors the method's term cannot multiply (BD-LoRA's block-diagonal ones) never builds it.
 */
function lazyParts(method: AdapterMethod, ctx: ForwardContext<any, any>): Record<string, Tensor> {
  let made: Record<string, Tensor> | null = null;
  return new Proxy({} as Record<string, Tensor>, {
    get: (_target, key) => (typeof key === 'string' ? (made ??= method.parts!(ctx))[key] : undefined),
  });
}

/** The merged weight of one layer: the method's merge, or W0 + ΔW. */
export function mergedWeight(method: AdapterMethod, v: LayerValues<any, any>, w0: Float32Array): Float32Array {
  if (method.merge) return method.merge(v, w0);
  if (!method.delta) throw new Error(`internal: ${method.name} cannot merge`);
  const d = method.delta(v);
  const out = new Float32Array(w0.length);
  for (let i = 0; i < out.length; i++) out[i] = w0[i] + d[i];
  return out;
}
