// The bridge from a loaded Hugging Face model to what the adapter framework needs of a base model.
import type { LoadedModel } from '../models/index.ts';
import type { AdaptableBase } from './model.ts';

/** An AdaptableBase over a loaded model: its modules, stored weights, and its output head (`lm_head`) if it has one. */
export function adaptable(model: LoadedModel): AdaptableBase {
  const modules = model.modules();
  return {
    modules,
    parameters: model.parameters().map((p) => p.name),
    readWeight: (name) => model.read(name),
    weightDtype: (name) => model.storedDtype(name),
    outputHead: modules.some((m) => m.path === 'lm_head') ? 'lm_head' : null,
  };
}
