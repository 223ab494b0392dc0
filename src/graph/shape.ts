// Shapes whose dims are numbers or symbols ("B", "T", "B*T"), and the rules that combine them.
import { LorakitError } from '../errors.ts';

/** A dim is a known size or a symbol fixed at run time. */
export type Dim = number | string;
export type Shape = readonly Dim[];

export function fmtShape(s: Shape): string {
  return `[${s.join(', ')}]`;
}

/** Number of elements when every dim is known, else undefined. */
export function numel(s: Shape): number | undefined {
  let n = 1;
  for (const d of s) {
    if (typeof d !== 'number') return undefined;
    n *= d;
  }
  return n;
}

export function isStatic(s: Shape): s is readonly number[] {
  return s.every((d) => typeof d === 'number');
}

/** Numpy broadcasting of two shapes; a symbol against a number > 1 takes the number. */
export function broadcastShapes(a: Shape, b: Shape, where: string): Dim[] {
  const n = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < n; i++) {
    const da = i < n - a.length ? 1 : a[i - (n - a.length)];
    const db = i < n - b.length ? 1 : b[i - (n - b.length)];
    if (da === db || db === 1) out.push(da);
    else if (da === 1) out.push(db);
    else if (typeof da === 'number' && typeof db === 'number') {
      throw new LorakitError('LK_SHAPE_MISMATCH', `${where}: cannot broadcast ${fmtShape(a)} with ${fmtShape(b)}`);
    } else out.push(typeof da === 'number' ? da : db);
  }
  return out;
}

/** Normalises a possibly negative axis against a rank. */
export function normAxis(axis: number, rank: number, where: string): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) {
    throw new LorakitError('LK_INVALID_ARGUMENT', `${where}: axis ${axis} is out of range for rank ${rank}`);
  }
  return a;
}

/** A dim for the product of dims: a number when all are known, else a symbol such as "B*T" or "2*B". */
export function dimProduct(dims: readonly Dim[]): Dim {
  let n = 1;
  const syms: string[] = [];
  for (const d of dims) {
    if (typeof d === 'number') n *= d;
    else
      syms.push(
        ...d.split('*').filter((p) => {
          const v = Number(p);
          if (Number.isInteger(v)) {
            n *= v;
            return false;
          }
          return true;
        }),
      );
  }
  if (syms.length === 0) return n;
  if (n === 0) return 0;
  syms.sort();
  return (n === 1 ? [] : [String(n)]).concat(syms).join('*');
}

/** dims(total) / dims(part) as a dim, when the division is exact; undefined otherwise. */
export function dimQuotient(total: readonly Dim[], part: readonly Dim[]): Dim | undefined {
  const split = (dims: readonly Dim[]): [number, string[]] => {
    const p = dimProduct(dims);
    if (typeof p === 'number') return [p, []];
    const parts = p.split('*');
    const num = Number(parts[0]);
    return Number.isInteger(num) ? [num, parts.slice(1)] : [1, parts];
  };
  const [tn, ts] = split(total);
  const [pn, ps] = split(part);
  if (pn === 0 || tn % pn !== 0) return undefined;
  const rest = [...ts];
  for (const s of ps) {
    const i = rest.indexOf(s);
    if (i < 0) return undefined;
    rest.splice(i, 1);
  }
  return dimProduct([tn / pn, ...rest]);
}
