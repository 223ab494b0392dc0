/**
 * The adapters a server can run, by name: a registry of names and folders (every folder under the adapter directory
 * is servable by its relative path; `load` registers more), and the resident adapters, in their served LoRA form,
 * kept in host memory up to a byte budget with least-recently-used eviction (vLLM's CPU LoRA cache, S-LoRA's host
 * store). An adapter is read on its first request (LoRAX's just-in-time loading, vLLM's filesystem resolver), and
 * concurrent first requests share one load. Requests pin the adapters they use, so a pinned adapter is never evicted;
 * a load that cannot fit beside the pinned ones fails with LK_OVERLOADED.
 *
 * Names are paths relative to the adapter directory and cannot leave it: each segment must be a plain name (letters,
 * digits, `.`, `_`, `-`, not starting with a dot), and the folder and the files read from it must resolve, through
 * every symlink, to a place inside the directory's real path.
 * Not here: the conversion to LoRA form (lora-form.ts), adapter slots of the running batch (slots.ts).
 */
import { existsSync, isAbsolute, join, realpath, relative, sep, stat } from '../io/host.ts';
import { LorakitError } from '../errors.ts';
import { findChatTemplate } from '../io/index.ts';
import { type AdaptableBase, PeftModel, loadAdapter } from '../peft/index.ts';
import { type LoraForm, type LoraFormOptions, toLoraForm } from './lora-form.ts';

/** An adapter held in memory in served form. */
export interface ResidentAdapter {
  /** The name requests use (`model`). */
  name: string;
  /** Unique per load: a reloaded adapter of the same name is another instance (slots are keyed by it). */
  key: string;
  /** The folder it was read from (real path). */
  dir: string;
  form: LoraForm;
  /** Bytes of its served form. */
  bytes: number;
  /** Its own chat template (chat_template.jinja or tokenizer_config.json in its folder), if it ships one. */
  chatTemplate: string | undefined;
  /** Seconds since the epoch when it was loaded. */
  created: number;
}

/** Options of an AdapterPool. */
export interface AdapterPoolOptions extends Omit<LoraFormOptions, 'tolerance'> {
  /** The adapter directory (lazy loading and `load` paths live under it); null: no adapters. */
  dir: string | null;
  /** Bytes of served adapters kept resident at most. */
  memoryBudget: number;
  /** The base model the adapters apply to. */
  base: AdaptableBase;
}

/** A path segment of an adapter name: a plain file name, not `.`, `..` or hidden. */
const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

/** Registered and resident adapters; see the file header. */
export class AdapterPool {
  /** Registered names and their folders (real paths). */
  private readonly registry = new Map<string, string>();
  private readonly resident = new Map<string, ResidentAdapter>();
  private readonly loading = new Map<string, Promise<ResidentAdapter>>();
  private readonly pins = new Map<string, number>();
  private root: string | null = null;
  private loads = 0;

  constructor(readonly opts: AdapterPoolOptions) {}

  /** Bytes of the resident adapters. */
  get bytes(): number {
    return [...this.resident.values()].reduce((n, a) => n + a.bytes, 0);
  }

  /** The resident adapters, least recently used first. */
  residents(): ResidentAdapter[] {
    return [...this.resident.values()];
  }

  /** Registered adapter names (explicit loads and the ones used so far) with their folders. */
  registered(): Map<string, string> {
    return new Map(this.registry);
  }

  /**
   * The resident adapter `name`, loading it first if needed, pinned until `unpin(name)`. Errors: LK_NOT_FOUND (no
   * such folder), LK_INVALID_ARGUMENT (a name that would leave the adapter directory), a load error of the adapter
   * (its config, tensors or LoRA form), LK_OVERLOADED (no room beside the pinned adapters).
   */
  async acquire(name: string): Promise<ResidentAdapter> {
    this.pins.set(name, (this.pins.get(name) ?? 0) + 1);
    try {
      const hit = this.resident.get(name);
      if (hit) {
        this.resident.delete(name); // most recently used last
        this.resident.set(name, hit);
        return hit;
      }
      let p = this.loading.get(name);
      if (!p) {
        // set before any await, so concurrent first requests share this load
        p = (async () => this.read(name, this.registry.get(name) ?? (await this.resolve(name))))();
        this.loading.set(name, p);
        p.then(
          () => this.loading.delete(name),
          () => this.loading.delete(name),
        );
      }
      return await p;
    } catch (e) {
      this.unpin(name);
      throw e;
    }
  }

  /** One user fewer of adapter `name`. */
  unpin(name: string): void {
    const n = (this.pins.get(name) ?? 0) - 1;
    if (n < 0) throw new Error(`internal: adapter "${name}" unpinned more often than pinned`);
    if (n === 0) this.pins.delete(name);
    else this.pins.set(name, n);
  }

  /**
   * Registers adapter `name` from `path` (relative to the adapter directory, or absolute inside it) and loads it
   * (vLLM's /v1/load_lora_adapter). A name already registered is an error unless it is the same folder.
   */
  async load(name: string, path: string): Promise<ResidentAdapter> {
    checkName(name, 'lora_name');
    const dir = await this.resolve(path, 'lora_path', true);
    const known = this.registry.get(name);
    if (known !== undefined && known !== dir) {
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `adapter "${name}" is already loaded from another folder; unload it first`,
        { param: 'lora_name' },
      );
    }
    this.registry.set(name, dir);
    const a = await this.acquire(name);
    this.unpin(name);
    return a;
  }

  /** Unregisters `name` and drops it from memory (requests running with it finish first); false if unknown. */
  unload(name: string): ResidentAdapter | null | false {
    const a = this.resident.get(name) ?? null;
    if (!this.registry.delete(name) && !a) return false;
    this.resident.delete(name);
    return a;
  }

  /**
   * The real folder of adapter `name`, checked to stay inside the adapter directory; `absolute` also takes an
   * absolute path (a load's lora_path), which must lie inside it too.
   */
  async resolve(name: string, param = 'model', absolute = false): Promise<string> {
    const root = await this.rootDir(param);
    const abs = absolute && isAbsolute(name);
    if (!abs) checkName(name, param);
    const candidate = abs ? name : join(root, ...name.split('/'));
    let real: string;
    try {
      real = await realpath(candidate);
    } catch {
      throw new LorakitError('LK_NOT_FOUND', `no adapter "${name}" in the adapter directory`, { param });
    }
    const inside = (p: string) => p !== root && !relative(root, p).startsWith('..') && p.startsWith(root + sep);
    if (!inside(real)) {
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `adapter "${name}" resolves outside the adapter directory; only folders inside it are served`,
        { param },
      );
    }
    if (!(await stat(real)).isDirectory())
      throw new LorakitError('LK_NOT_FOUND', `adapter "${name}" is not a folder`, { param });
    for (const f of ['adapter_config.json', 'adapter_model.safetensors']) {
      const file = await realpath(join(real, f)).catch(() => null);
      if (file !== null && !inside(file)) {
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          `adapter "${name}": ${f} resolves outside the adapter directory; only files inside it are read`,
          { param },
        );
      }
    }
    return real;
  }

  private async rootDir(param: string): Promise<string> {
    if (this.opts.dir === null) {
      throw new LorakitError('LK_NOT_FOUND', 'the server has no adapter directory (start it with --adapters <dir>)', {
        param,
      });
    }
    this.root ??= await realpath(this.opts.dir).catch(() => {
      throw new LorakitError('LK_FILE_NOT_FOUND', `adapter directory ${this.opts.dir} does not exist`);
    });
    return this.root;
  }

  /** Reads, converts and makes resident the adapter in `dir` under `name`, evicting unpinned adapters to fit. */
  private async read(name: string, dir: string): Promise<ResidentAdapter> {
    // an Arrow router routes every token among several adapters; the batched graph gives each row one adapter
    if (existsSync(join(dir, 'arrow_config.json')))
      throw new LorakitError(
        'LK_UNSUPPORTED',
        `adapter "${name}" is an Arrow router folder (arrow_config.json); lorakit serve does not route Arrow folders ` +
          'yet: evaluate it with `lorakit eval --adapter`, or serve one of its subfolders',
        { param: 'model' },
      );
    const peft = new PeftModel(this.opts.base);
    await loadAdapter(peft, dir, 'serve');
    const form = await toLoraForm(peft, this.opts.base, 'serve', this.opts);
    const chatTemplate = await findChatTemplate(dir);
    const bytes = form.floats * 4;
    this.makeRoom(bytes, name);
    const a: ResidentAdapter = {
      name,
      key: `${name}#${++this.loads}`,
      dir,
      form,
      bytes,
      chatTemplate,
      created: Math.floor(Date.now() / 1000),
    };
    this.registry.set(name, dir);
    this.resident.set(name, a);
    return a;
  }

  /** Evicts least recently used unpinned adapters until `bytes` more fit in the budget. */
  private makeRoom(bytes: number, name: string): void {
    const budget = this.opts.memoryBudget;
    if (bytes > budget) {
      throw new LorakitError(
        'LK_OVERLOADED',
        `adapter "${name}" takes ${bytes} bytes in LoRA form, more than the adapter memory budget ${budget}`,
      );
    }
    for (const [n, a] of this.resident) {
      if (this.bytes + bytes <= budget) break;
      if (!this.pins.has(n) && a) this.resident.delete(n);
    }
    if (this.bytes + bytes > budget) {
      throw new LorakitError(
        'LK_OVERLOADED',
        `adapter "${name}" (${bytes} bytes) does not fit beside the adapters in use (${this.bytes} of ${budget} ` +
          'bytes); retry when fewer adapters are running, or raise --adapter-memory',
      );
    }
  }
}

/** Checks that an adapter name is a relative path of plain segments. */
function checkName(name: string, param: string): void {
  const segments = typeof name === 'string' ? name.split('/') : [];
  if (name.length > 512 || segments.length === 0 || !segments.every((s) => SEGMENT.test(s))) {
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `${JSON.stringify(String(name).slice(0, 80))} is not a valid adapter name: a relative path of names made of ` +
        'letters, digits, ".", "_" and "-" (not starting with "."), separated by "/"',
      { param },
    );
  }
}
