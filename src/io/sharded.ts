/**
 * Model weight folders as Hugging Face writes them: one `model.safetensors`, or shards listed by
 * `model.safetensors.index.json` ({"metadata": …, "weight_map": {tensor: shard file}}). Both are read through the
 * WeightsReader API of safetensors.ts. Reading only; which tensors a model needs is not decided here.
 */
import { basename, join, readFile, readdir, stat } from './host.ts';
import { LorakitError } from '../errors.ts';
import { SafetensorsFile, unknownTensorError } from './safetensors.ts';
import { fsError, isSystemError } from './fs-error.ts';
import type { ReadType, ReadTypeMap, TensorInfo, WeightsReader } from './safetensors.ts';

/** Options of openWeights. */
export interface OpenWeightsOptions {
  /** File stem: `<stem>.safetensors` or `<stem>.safetensors.index.json`; default 'model'. */
  stem?: string;
}

/** Tensors spread over several safetensors shards, addressed through the index's weight_map. */
export class ShardedWeights implements WeightsReader {
  /** `__metadata__` of the first shard (in file-name order). */
  readonly metadata: Record<string, string>;

  private constructor(
    /** Path of the index file. */
    readonly indexPath: string,
    /** `metadata` object of the index (e.g. total_size), as found. */
    readonly indexMetadata: Record<string, unknown>,
    private readonly shardOfTensor: Map<string, SafetensorsFile>,
    private readonly shards: SafetensorsFile[],
  ) {
    this.metadata = shards[0]?.metadata ?? {};
  }

  /** Opens an index file and every shard it names, checking that each mapped tensor is in its shard. */
  static async open(indexPath: string): Promise<ShardedWeights> {
    let text: string;
    try {
      text = await readFile(indexPath, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT')
        throw new LorakitError('LK_FILE_NOT_FOUND', `index file ${indexPath} does not exist`, { file: indexPath });
      throw e;
    }
    const invalid = (what: string): LorakitError =>
      new LorakitError('LK_FILE_INVALID', `${indexPath}: ${what}`, { file: indexPath });
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw invalid(`not valid JSON (${(e as Error).message})`);
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json))
      throw invalid('expected a JSON object with a weight_map');
    const { weight_map: map, metadata } = json as Record<string, unknown>;
    if (typeof map !== 'object' || map === null || Array.isArray(map)) {
      throw invalid(
        `expected "weight_map" to be an object {tensor name: shard file}, found ` +
          `${map === undefined ? 'nothing' : JSON.stringify(map).slice(0, 60)}`,
      );
    }
    const indexMetadata =
      typeof metadata === 'object' && metadata !== null && !Array.isArray(metadata)
        ? (metadata as Record<string, unknown>)
        : {};

    const dir = join(indexPath, '..');
    const files = new Set<string>();
    for (const [tensor, file] of Object.entries(map)) {
      // Shards must sit beside the index: a path could otherwise point anywhere on disk.
      if (
        typeof file !== 'string' ||
        file === '' ||
        basename(file) !== file ||
        file === '.' ||
        file === '..' ||
        file.includes('\\')
      ) {
        throw invalid(
          `weight_map['${tensor}']: expected a shard file name in the same folder, found ${JSON.stringify(file)}`,
        );
      }
      files.add(file);
    }

    const shards: SafetensorsFile[] = [];
    const byFile = new Map<string, SafetensorsFile>();
    try {
      for (const file of [...files].sort()) {
        const path = join(dir, file);
        let shard: SafetensorsFile;
        try {
          shard = await SafetensorsFile.open(path);
        } catch (e) {
          if (e instanceof LorakitError && e.code === 'LK_FILE_NOT_FOUND') {
            const first = Object.entries(map).find(([, f]) => f === file)![0];
            throw new LorakitError(
              'LK_FILE_NOT_FOUND',
              `shard ${file} listed in ${indexPath} (for tensor '${first}' and others) does not exist in ${dir}`,
              { file: path, index: indexPath },
            );
          }
          throw e;
        }
        shards.push(shard);
        byFile.set(file, shard);
      }
      const shardOfTensor = new Map<string, SafetensorsFile>();
      for (const [tensor, file] of Object.entries(map) as Array<[string, string]>) {
        const shard = byFile.get(file)!;
        if (!shard.has(tensor)) {
          throw invalid(
            `weight_map says tensor '${tensor}' is in ${file}, but ${file} has no such tensor (it has ` +
              `${shard.names().length})`,
          );
        }
        shardOfTensor.set(tensor, shard);
      }
      return new ShardedWeights(indexPath, indexMetadata, shardOfTensor, shards);
    } catch (e) {
      await Promise.all(shards.map((s) => s.close()));
      throw e;
    }
  }

  /** Tensor names in weight_map order. */
  names(): string[] {
    return [...this.shardOfTensor.keys()];
  }

  /** Whether weight_map lists `name`. */
  has(name: string): boolean {
    return this.shardOfTensor.has(name);
  }

  /** Path of the shard that holds `name`. */
  shardOf(name: string): string {
    return this.shard(name).path;
  }

  /** The header entry of `name` in its shard (dataOffset is within that shard). */
  info(name: string): TensorInfo {
    return this.shard(name).info(name);
  }

  /** The raw bytes of `name`, read from its shard. */
  read(name: string): Promise<Uint8Array> {
    return this.shard(name).read(name);
  }

  /** `name` as a typed array of `type` (see canReadAs in safetensors.ts). */
  readAs<T extends ReadType>(name: string, type: T): Promise<ReadTypeMap[T]> {
    return this.shard(name).readAs(name, type);
  }

  /** Closes every shard. */
  async close(): Promise<void> {
    await Promise.all(this.shards.map((s) => s.close()));
  }

  private shard(name: string): SafetensorsFile {
    const s = this.shardOfTensor.get(name);
    if (!s) throw unknownTensorError(name, this.names(), this.indexPath);
    return s;
  }
}

async function kind(path: string): Promise<'file' | 'dir' | undefined> {
  try {
    const st = await stat(path);
    return st.isDirectory() ? 'dir' : 'file';
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR')
      return undefined;
    throw isSystemError(e) ? fsError(e, 'read', path) : e; // a symbolic link loop, a folder it may not read
  }
}

/**
 * Opens model weights: a folder with `model.safetensors` (preferred when both exist, as transformers does) or
 * `model.safetensors.index.json` plus its shards; `path` may also name either file directly.
 */
export async function openWeights(path: string, options: OpenWeightsOptions = {}): Promise<WeightsReader> {
  const stem = options.stem ?? 'model';
  const k = await kind(path);
  if (k === undefined)
    throw new LorakitError('LK_FILE_NOT_FOUND', `weights path ${path} does not exist`, { file: path });
  if (k === 'file') return path.endsWith('.index.json') ? ShardedWeights.open(path) : SafetensorsFile.open(path);
  const single = join(path, `${stem}.safetensors`);
  if ((await kind(single)) === 'file') return SafetensorsFile.open(single);
  const index = join(path, `${stem}.safetensors.index.json`);
  if ((await kind(index)) === 'file') return ShardedWeights.open(index);
  const present = (await readdir(path)).sort();
  const shown =
    present.length === 0
      ? 'the folder is empty'
      : `found ${present.slice(0, 8).join(', ')}${present.length > 8 ? `, … (${present.length} entries)` : ''}`;
  throw new LorakitError(
    'LK_FILE_NOT_FOUND',
    `no weights in folder ${path}: expected ${stem}.safetensors or ${stem}.safetensors.index.json; ${shown}`,
    { file: path },
  );
}
