/**
 * Reverse-mode autodiff over a Graph. `grad(y, xs)` appends the backward nodes to the same graph and returns
 * dy/dx for each x. Only nodes on a path from some x to y get a rule applied. Broadcasting is undone here once
 * (gradients are summed back to each input's shape), and fan-out is accumulated here, so rules stay one-liners.
 */
import { LorakitError } from '../errors.ts';
import { isFloat } from './dtype.ts';
import { type Tensor, type Node, nodeReads } from './graph.ts';
import { OPS } from './ops/index.ts';
import { zerosLike } from './ops/util.ts';
import { fmtShape, type Shape } from './shape.ts';

/** Sums `g` over the axes along which `shape` was broadcast to g's shape, then drops the leading ones. */
export function sumToShape(g: Tensor, shape: Shape): Tensor {
  if (g.rank === shape.length && g.shape.every((d, i) => d === shape[i])) return g;
  const lead = g.rank - shape.length;
  if (lead < 0)
    throw new Error(`internal: gradient ${fmtShape(g.shape)} has lower rank than its input ${fmtShape(shape)}`);
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) {
    if (i < lead) axes.push(i);
    else if (shape[i - lead] === 1 && g.shape[i] !== 1) axes.push(i);
  }
  const r = axes.length ? g.sum(axes, true) : g;
  return lead > 0 ? r.squeeze(Array.from({ length: lead }, (_, i) => i)) : r;
}

/**
 * Gradients of `y` with respect to each of `xs`. `y` must be a scalar unless `dy` (the output gradient, same shape
 * as y) is given. A tensor that y does not depend on gets a zero gradient.
 */
export function grad(y: Tensor, xs: readonly Tensor[], dy?: Tensor): Tensor[] {
  const g = y.graph;
  if (!dy && y.rank !== 0)
    throw new LorakitError('LK_INVALID_ARGUMENT', `grad: y must be a scalar (got ${y.toString()}) unless dy is given`);
  for (const x of xs)
    if (x.graph !== g) throw new LorakitError('LK_GRAPH_INVALID', `grad: ${x.name} belongs to another graph`);

  // Forward: tensors that depend on some x through differentiable edges. Integer and boolean outputs (TopK's and
  // ArgMax's indices, comparisons, shapes) carry no gradient, so nothing downstream of them asks for a rule.
  const fromX = new Set<Tensor>(xs);
  const nodes = g.nodes.slice(); // backward nodes appended below are not walked
  for (const n of nodes) {
    if (n.stopGradient) continue;
    if (nodeReads(n).some((t) => t && fromX.has(t))) for (const o of n.outputs) if (isFloat(o.dtype)) fromX.add(o);
  }
  // Backward: tensors that y depends on.
  const toY = new Set<Tensor>([y]);
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i];
    if (n.outputs.some((o) => toY.has(o))) for (const t of nodeReads(n)) if (t) toY.add(t);
  }

  const grads = new Map<Tensor, Tensor>();
  grads.set(y, dy ?? g.scalar(1, y.dtype));
  const accumulate = (t: Tensor, d: Tensor) => {
    const prev = grads.get(t);
    grads.set(t, prev ? prev.add(d) : d);
  };

  g.scope('grad', () => {
    for (let i = nodes.length - 1; i >= 0; i--) {
      const n: Node = nodes[i];
      if (n.stopGradient || !n.outputs.some((o) => grads.has(o) && fromX.has(o))) continue;
      const needs = n.inputs.map((t) => !!t && fromX.has(t) && toY.has(t));
      const implicit = n.implicitInputs?.some((t) => fromX.has(t) && toY.has(t)) ?? false;
      if (!needs.some(Boolean) && !implicit) continue;
      const rule = OPS[n.op].vjp;
      if (typeof rule === 'string') {
        throw new LorakitError(
          'LK_NO_GRADIENT',
          `${n.name}: ${n.op} has no gradient (${rule}); detach() its input or take the gradient elsewhere`,
          { node: n.name },
        );
      }
      const dys = n.outputs.map((o) => grads.get(o) ?? null);
      const dxs = rule(n, dys, needs);
      n.inputs.forEach((t, k) => {
        const d = dxs[k];
        if (!t || !needs[k] || !d) return;
        accumulate(t, sumToShape(d, t.shape));
      });
    }
  });
  return xs.map((x) => grads.get(x) ?? zerosLike(x));
}
