/**
 * The CLI shell: maps flags to library calls. Each command lives in its own file and is imported lazily, so
 * `lorakit info` never loads ONNX Runtime. Only this layer calls process.exit. Errors leave here as one line: a
 * LorakitError with the library's option names respelled as the flags the user typed (`flagSpelling`), a system
 * error (a full disk, a read-only folder) as the lorakit error io/fs-error.ts makes of it.
 */
import { cac } from 'cac';
import { LorakitError, respell } from '../errors.ts';
import { fsError, isSystemError } from '../io/fs-error.ts';
import { COMMANDS } from './commands.ts';

/** A command file's export: registers flags on the cac instance and runs the library call. */
export interface CommandModule {
  register(cli: ReturnType<typeof cac>): void;
}

type Cli = ReturnType<typeof cac>;

/** The long flags of command `name`: camelCase option name → `--kebab-flag`, and whether each takes a value. */
function flagsOf(cli: Cli, name: string | undefined): Map<string, { flag: string; takesValue: boolean }> {
  const out = new Map<string, { flag: string; takesValue: boolean }>();
  const command = cli.commands.find((c) => c.name.split(' ')[0] === name);
  for (const o of command?.options ?? []) {
    const flag = o.rawName.split(/[\s,]+/).find((p) => p.startsWith('--'));
    if (flag) for (const n of o.names) out.set(n, { flag, takesValue: !o.isBoolean });
  }
  return out;
}

/** Library option name → the flag the user typed ("maxNewTokens" → "--max-new-tokens", "seed" → "--seed"). */
function flagSpelling(cli: Cli, name: string | undefined): Record<string, string> {
  return Object.fromEntries([...flagsOf(cli, name)].map(([n, { flag }]) => [n, flag]));
}

// A negative number as a flag's value: cac would read `--seed -5` as an unknown option `-5`.
const NEGATIVE_NUMBER = /^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i;

/** `--flag -5` becomes `--flag=-5` for a flag that takes a value, which is how cac reads a negative value. */
function joinNegativeValues(argv: string[], cli: Cli, name: string | undefined): string[] {
  const valued = new Set([...flagsOf(cli, name).values()].filter((f) => f.takesValue).map((f) => f.flag));
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (valued.has(a) && i + 1 < argv.length && NEGATIVE_NUMBER.test(argv[i + 1])) out.push(`${a}=${argv[++i]}`);
    else out.push(a);
  }
  return out;
}

export async function main(argv: string[]): Promise<void> {
  const cli = cac('lorakit');
  const name = argv.find((a) => !a.startsWith('-'));
  try {
    if (name && COMMANDS[name]) {
      (await COMMANDS[name].load()).register(cli);
    } else {
      for (const [n, c] of Object.entries(COMMANDS)) cli.command(n, c.describe);
    }
    cli.help();
    cli.version('0.1.0');
    cli.parse(['node', 'lorakit', ...joinNegativeValues(argv, cli, name)], { run: false });
    if (!name && !cli.options.help && !cli.options.version) {
      cli.outputHelp();
      return;
    }
    if (name && !COMMANDS[name])
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `unknown command "${name}"; commands: ${Object.keys(COMMANDS).join(', ')}`,
      );
    await cli.runMatchedCommand();
  } catch (caught) {
    const e = isSystemError(caught) ? fsError(caught) : caught;
    if (e instanceof LorakitError) {
      const shown = respell(e, flagSpelling(cli, name));
      console.error(`lorakit: ${shown.message} [${shown.code}]`);
      process.exit(1);
    }
    if (e instanceof Error && e.name === 'CACError') {
      // cac's own usage errors: a missing argument or option value, an unknown option
      const negative = /`(-[^`]*)`/.exec(e.message)?.[1];
      const how = negative && NEGATIVE_NUMBER.test(negative) ? ` (a negative value goes as --flag=${negative})` : '';
      console.error(`lorakit: ${e.message}${how}; see \`lorakit ${name ?? ''} --help\``);
      process.exit(1);
    }
    throw e;
  }
}
