/**
 * The error catalogue: every error a user can act on carries a stable `LK_…` code listed here.
 * docs/errors.md documents each code (a test checks that), and the HTTP server maps codes to statuses.
 * Invariant failures are plain `Error`s whose message starts with `internal:`; they are bugs and nothing catches them.
 */

export const ERROR_CODES = {
  LK_INVALID_ARGUMENT: 'a function was called with an argument of the wrong type, range or shape',
  LK_SHAPE_MISMATCH: 'two tensors (or a tensor and a feed) have shapes that do not fit together',
  LK_DTYPE_MISMATCH: 'a tensor or feed has a different dtype than the operation expects',
  LK_UNKNOWN_OP: 'a graph uses an operator that lorakit or ONNX Runtime does not know',
  LK_NO_GRADIENT: 'a gradient was asked through an operator that has no gradient rule',
  LK_GRAPH_INVALID: 'a graph is malformed: a missing input, an unused output name, a cycle, a duplicate name',
  LK_FEED_MISSING: 'a graph input was not given a value at run time',
  LK_FEED_UNKNOWN: 'a value was fed for a name that is not an input of the graph',
  LK_RUNTIME: 'ONNX Runtime failed while creating or running a session',
  LK_SESSION_DISPOSED: 'a session was used after dispose()',
  LK_EP_UNAVAILABLE: 'the requested execution provider is not available on this machine',
  LK_FILE_NOT_FOUND: 'a file or folder that was named does not exist',
  LK_FILE_INVALID: 'a file exists but its content is malformed (safetensors, JSON, config, dataset)',
  LK_CONFIG_INVALID: 'a configuration (model config.json, adapter_config.json, run YAML) has a wrong or missing field',
  LK_UNSUPPORTED: 'the input is valid but lorakit does not support it (yet): an architecture, a dtype, an option',
  LK_NON_FINITE: 'training produced a NaN or infinite loss or gradient norm; the run stopped at that step',
  LK_NOT_FOUND: 'a server request names a model, adapter or route the server does not have',
  LK_OVERLOADED: 'the server holds as many requests (or resident adapters) as it may; retry later',
  LK_UNAUTHORIZED: 'a server request lacks the bearer API key the server was started with, or has a wrong one',
  LK_PAYLOAD_TOO_LARGE: 'a server request body is larger than the server accepts',
  LK_UNAVAILABLE: 'the server is shutting down (or its engine stopped) and takes no new requests',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** The one error class of the library: `code` is stable, `message` says where, what was expected and what was found. */
export class LorakitError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;
  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = 'LorakitError';
    this.code = code;
    this.details = details;
  }
}

/** Throws a LorakitError with `code` unless `cond` holds. */
export function check(cond: unknown, code: ErrorCode, message: string | (() => string)): asserts cond {
  if (!cond) throw new LorakitError(code, typeof message === 'function' ? message() : message);
}

/** Marks a broken invariant (a bug in lorakit, not in the caller's input). */
export function internal(message: string): never {
  throw new Error(`internal: ${message}`);
}
