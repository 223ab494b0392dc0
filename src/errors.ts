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
  LK_FILE_NOT_FOUND:
    'a file or folder that was named does not exist, or is a file where a folder is needed (or the reverse)',
  LK_FILE_INVALID: 'a file exists but its content is malformed (safetensors, JSON, config, dataset)',
  LK_CONFIG_INVALID: 'a configuration (model config.json, adapter_config.json, run YAML) has a wrong or missing field',
  LK_UNSUPPORTED: 'the input is valid but lorakit does not support it (yet): an architecture, a dtype, an option',
  LK_NON_FINITE: 'training produced a NaN or infinite loss or gradient norm; the run stopped at that step',
  LK_PERMISSION_DENIED: 'the system refused to read or write a path: no permission, or a read-only file system',
  LK_DISK_FULL: 'a write failed because the disk (or the quota) holding the path is full',
  LK_IO: 'the system failed a file operation for another reason: a symbolic link loop, an I/O error, too many files',
  LK_LOCKED: 'a folder is in use by another lorakit process (its lock file names the process)',
  LK_NOT_FOUND: 'a server request names a model, adapter or route the server does not have',
  LK_OVERLOADED: 'the server holds as many requests (or resident adapters) as it may; retry later',
  LK_UNAUTHORIZED: 'a server request lacks the bearer API key the server was started with, or has a wrong one',
  LK_PAYLOAD_TOO_LARGE: 'a server request body is larger than the server accepts',
  LK_UNAVAILABLE: 'the server is shutting down (or its engine stopped) and takes no new requests',
  LK_NETWORK: 'a server (a Flower SuperLink) could not be reached, or kept failing, after the retries',
  LK_PROTOCOL_MISMATCH: 'a server answered in another protocol or version than lorakit speaks (Flower Fleet API)',
  LK_SERVER_REJECTED: 'a server (a Flower SuperLink) refused a request: authentication, run state, a lost node',
  LK_NODE_NOT_REGISTERED: 'a Flower SuperLink with node authentication refused a node key that is not registered',
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

/**
 * `e` with the library's option names respelled as a shell's user typed them (`names`: library name → a CLI flag or
 * a YAML key). Every camelCase name in `names` is respelled where it stands as a word, since no English word of a
 * message is camelCase; a one-word name ("seed") only when it is the error's `details.option` and the message does
 * not already use the shell's spelling (a shell's own errors do). Each shell (the CLI, the
 * YAML run config) calls this once where it catches errors, so library messages keep one spelling. The result keeps
 * the code and details, with `details.option` in the shell's spelling and the library's in `details.libraryOption`.
 */
export function respell(e: LorakitError, names: Readonly<Record<string, string>>): LorakitError {
  const option = typeof e.details.option === 'string' ? e.details.option : undefined;
  // a name as a word of its own: not inside a flag or a dotted key the message already spells (`--model`, `data.seed`)
  const word = (k: string) => new RegExp(`(?<![\\w.-])${k.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\b`, 'g');
  // a one-word name is respelled only where it is the error's option and the message does not spell it already
  const oneWordOk = (k: string) => k === option && !e.message.includes(names[k]);
  const renamed = Object.keys(names).filter(
    (k) => names[k] !== k && (/[a-z][A-Z]/.test(k) || oneWordOk(k)) && word(k).test(e.message),
  );
  const known = option !== undefined && names[option] !== undefined;
  if (renamed.length === 0 && !known) return e;
  const message = renamed.reduce((m, k) => m.replace(word(k), names[k]), e.message);
  return new LorakitError(
    e.code,
    message,
    known ? { ...e.details, option: names[option], libraryOption: option } : e.details,
  );
}

/** Throws a LorakitError with `code` unless `cond` holds. */
export function check(cond: unknown, code: ErrorCode, message: string | (() => string)): asserts cond {
  if (!cond) throw new LorakitError(code, typeof message === 'function' ? message() : message);
}

/** Marks a broken invariant (a bug in lorakit, not in the caller's input). */
export function internal(message: string): never {
  throw new Error(`internal: ${message}`);
}
