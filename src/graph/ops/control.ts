// Control flow: Scan runs a body graph once per slice of its inputs along axis 0 (Graph.scan builds it).
import { LorakitError } from '../../errors.ts';
import type { AttrGraph, ControlOp, OpDef } from './types.ts';

export const controlOps: Record<ControlOp, OpDef> = {
  Scan: {
    // outputs: each body output stacked along a new axis 0 of the scanned length
    infer: (inputs, attrs) => {
      const body = attrs.body as AttrGraph;
      const steps = inputs[0]?.shape[0];
      if (steps === undefined || inputs.some((t) => !t || t.shape[0] !== steps))
        throw new LorakitError('LK_SHAPE_MISMATCH', 'Scan: every scanned input needs the same leading dim');
      return body.outputs.map((o) => ({ dtype: o.dtype, shape: [steps, ...o.shape] }));
    },
    vjp: 'its body is not differentiated: detach what it reads and take the gradient outside',
  },
};
