// Flag checks shared by the commands: cac leaves a non-numeric value as a string and a missing one undefined, so
// each command checks its flags here and the error names the flag.
import { LorakitError } from '../errors.ts';

const bad = (flag: string, msg: string) => new LorakitError('LK_INVALID_ARGUMENT', msg, { option: flag });

/** A required string flag (`--model <dir>`); `placeholder` and `what` shape the message. */
export function requiredFlag(flag: string, v: unknown, what: string, placeholder = '<dir>'): string {
  if (typeof v !== 'string' || v === '') throw bad(flag, `--${flag} ${placeholder} is required: ${what}`);
  return v;
}

/** An integer flag >= min (default 1); undefined when absent. */
export function intFlag(flag: string, v: unknown, min = 1): number | undefined {
  if (v === undefined) return undefined;
  const n = typeof v === 'number' ? v : NaN;
  if (!Number.isInteger(n) || n < min) {
    throw bad(
      flag,
      min === 1
        ? `--${flag} expects a positive integer, got ${JSON.stringify(v)}`
        : `--${flag} expects an integer >= ${min}, got ${JSON.stringify(v)}`,
    );
  }
  return n;
}

/** A finite number flag; undefined when absent. */
export function numberFlag(flag: string, v: unknown): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v))
    throw bad(flag, `--${flag} expects a number, got ${JSON.stringify(v)}`);
  return v;
}

/** A comma-separated list of positive integers (`--ranks 1,2,4,8`; cac gives a lone number as a number), or undefined. */
export function intListFlag(flag: string, v: unknown): number[] | undefined {
  if (v === undefined) return undefined;
  const parts = typeof v === 'number' ? [String(v)] : typeof v === 'string' ? v.split(',') : [];
  const ns = parts.map((p) => (/^\s*\d+\s*$/.test(p) ? Number(p) : NaN));
  if (ns.length === 0 || ns.some((n) => !Number.isInteger(n) || n < 1))
    throw bad(flag, `--${flag} expects positive integers separated by commas (e.g. 1,2,4,8), got ${JSON.stringify(v)}`);
  return ns;
}

/** `--quantize none|int8|q4` (the frozen base's format); 'none' when absent. */
export function quantizeFlag(v: unknown): 'none' | 'int8' | 'q4' {
  if (v === undefined) return 'none';
  if (v === 'none' || v === 'int8' || v === 'q4') return v;
  throw bad('quantize', `--quantize expects none, int8 or q4, got ${JSON.stringify(v)}`);
}
