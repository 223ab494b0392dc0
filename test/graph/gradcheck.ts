// Gradient checking against central finite differences in float64, shared by the op and function tests.
import { Graph, type Tensor } from '../../src/graph/index.ts';
import { grad } from '../../src/graph/autodiff.ts';
import { compile } from '../../src/runtime/index.ts';
import { assertAllclose, randArray } from '../helpers.ts';

export interface InputSpec {
  shape: number[];
  lo?: number;
  hi?: number;
  values?: number[];
}

/** Ops seen in forward graphs built by gradcheck (the coverage test compares this with the op table). */
export const coveredOps = new Set<string>();

/**
 * Builds f(xs) with `build`, takes L = Σ f(xs)·R for a fixed random R, and compares autodiff's dL/dx with central
 * differences (step h) for every element of every input.
 */
export async function gradcheck(
  build: (g: Graph, xs: Tensor[]) => Tensor,
  specs: InputSpec[],
  { rtol = 1e-6, atol = 1e-8, seed = 1, h = 1e-6 } = {},
): Promise<void> {
  const g = new Graph('gradcheck');
  const xs = specs.map((s, i) => g.input(`x${i}`, 'f64', s.shape));
  const nodesBefore = g.nodes.length;
  const y = build(g, xs);
  for (const n of g.nodes.slice(nodesBefore)) coveredOps.add(n.op);
  const r = g.constant(
    randArray(
      Math.max(
        1,
        y.shape.reduce<number>((a, d) => a * (d as number), 1),
      ),
      seed + 100,
    ),
    'f64',
    y.shape as number[],
  );
  const loss = y.mul(r).sum();
  const grads = grad(loss, xs);
  g.output('loss', loss);
  grads.forEach((d, i) => g.output(`d${i}`, d));
  const s = await compile(g, { worker: false, optimization: 'disabled' });
  const values = specs.map((sp, i) =>
    sp.values
      ? Float64Array.from(sp.values)
      : randArray(
          sp.shape.reduce((a, b) => a * b, 1),
          seed + i,
          sp.lo ?? -1,
          sp.hi ?? 1,
        ),
  );
  const feeds = () => Object.fromEntries(values.map((v, i) => [`x${i}`, { data: v, shape: specs[i].shape }]));
  const out = await s.run(feeds());
  for (let i = 0; i < values.length; i++) {
    const numeric = new Float64Array(values[i].length);
    for (let k = 0; k < values[i].length; k++) {
      const v0 = values[i][k];
      values[i][k] = v0 + h;
      const lp = (await s.run(feeds(), ['loss'])).loss.data[0] as number;
      values[i][k] = v0 - h;
      const lm = (await s.run(feeds(), ['loss'])).loss.data[0] as number;
      values[i][k] = v0;
      numeric[k] = (lp - lm) / (2 * h);
    }
    assertAllclose(out[`d${i}`].data as Float64Array, numeric, { rtol, atol, what: `d/dx${i}` });
  }
  await s.dispose();
}
