/**
 * The registered methods and variants as a table (`lorakit methods`): each with its paper, its PEFT name, whether it
 * merges, and — for a given base model and config — the trainable parameters it would add, computed from the
 * method's own formula on the layers the config targets (no initialisation runs, nothing is allocated).
 * Not here: the registry itself (methods/index.ts, registry.ts).
 */
import { LorakitError } from '../errors.ts';
import { canMerge, configSchema, methods, resolveConfig, savedType, variantsOf } from './registry.ts';
import type { AdapterMethod, MethodVariant, RegistryEntry } from './method.ts';
import { type AdaptableBase, targetLayers } from './model.ts';
import { REGISTRY } from './methods/index.ts';

/** One row of the catalogue. */
export interface CatalogRow {
  name: string;
  kind: 'method' | 'variant';
  /** For a variant: the methods it modifies. */
  of: string | null;
  paper: string;
  /** How a PEFT config names it (peft_type, or the selecting field), or null when PEFT lacks it. */
  peft: string | null;
  /** How a lorakit config selects it. */
  selectedBy: Record<string, unknown>;
  /** true, or why it cannot merge. */
  merges: true | string;
  /** Trainable parameters on the given base with the given config; null without a base; an error message when the
   * config does not fit this method on this base. */
  trainable: number | string | null;
}

/** The fields of `common` the method's (or method + variants') config schema has: the rest would be refused. */
function fieldsOf(method: AdapterMethod, common: Record<string, unknown>): Record<string, unknown> {
  const known = configSchema(method).shape as Record<string, unknown>;
  return Object.fromEntries(Object.entries(common).filter(([k]) => k in known));
}

/** How PEFT spells a variant's selection, when the selecting field is one of PEFT's own (of a method PEFT has). */
function peftName(e: RegistryEntry, of: AdapterMethod | null = null): string | null {
  if (!('of' in e)) return e.peftType;
  if (e.inPeft === false) return null;
  if (of?.peftType === null) return null; // LoRA-SB's init_lora_weights belongs to LoRA-XS, which PEFT lacks
  const [field, value] = Object.entries(e.selectedBy)[0];
  const own = ['use_dora', 'init_lora_weights', 'use_bdlora'];
  return own.includes(field) ? `${field}: ${JSON.stringify(value)}` : null;
}

/**
 * The catalogue. With `base`, `common` config fields (e.g. target_modules, r) are applied to every entry that has
 * them, on top of the entry's own defaults, and the trainable count is computed on the targeted layers.
 */
export function methodCatalog(base: AdaptableBase | null, common: Record<string, unknown> = {}): CatalogRow[] {
  const rows: CatalogRow[] = [];
  const count = (method: AdapterMethod, selected: Record<string, unknown>): number | string | null => {
    if (!base) return null;
    try {
      const json = { ...fieldsOf(method, common), ...selected, peft_type: savedType(method) };
      const r = resolveConfig(json, `${method.name} config`);
      const source = `${method.name} config`;
      const layers = targetLayers(base, r.method, r.config, source).map((layer) => ({
        layer,
        settings: r.method.settings?.(r.config, layer),
      }));
      // a layer the method cannot wrap with this config (VB-LoRA's vector_length must divide it) is refused here too
      for (const l of layers) r.method.checkLayer?.(l.layer, l.settings, r.config, source);
      return r.method.trainableCount(r.config, layers);
    } catch (e) {
      if (e instanceof LorakitError) return e.message;
      throw e;
    }
  };
  for (const m of methods(REGISTRY)) {
    rows.push({
      name: m.name,
      kind: 'method',
      of: null,
      paper: m.paper,
      peft: peftName(m),
      selectedBy: { peft_type: savedType(m) },
      merges: canMerge(m) ? true : (m.unmergeable ?? 'no merge rule'),
      trainable: count(m, {}),
    });
    for (const v of variantsOf(m, REGISTRY)) {
      if (v.of === '*' && m !== methods(REGISTRY)[0]) continue; // a variant of every method: listed once, with LoRA
      rows.push(variantRow(m, v, count(m, v.selectedBy)));
    }
  }
  return rows;
}

function variantRow(m: AdapterMethod, v: MethodVariant, trainable: CatalogRow['trainable']): CatalogRow {
  const merges = v.unmergeable ?? (canMerge(m) ? true : (m.unmergeable ?? 'no merge rule'));
  return {
    name: v.name,
    kind: 'variant',
    of: v.of === '*' ? 'every method' : v.of.join(', '),
    paper: v.paper,
    peft: peftName(v, m),
    selectedBy: v.selectedBy,
    merges,
    trainable,
  };
}
