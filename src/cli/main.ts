/**
 * The CLI shell: maps flags to library calls. Each command lives in its own file and is imported lazily, so
 * `lorakit info` never loads ONNX Runtime. Only this layer calls process.exit.
 */
import { cac } from 'cac';
import { LorakitError } from '../errors.ts';
import { COMMANDS } from './commands.ts';

/** A command file's export: registers flags on the cac instance and runs the library call. */
export interface CommandModule {
  register(cli: ReturnType<typeof cac>): void;
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
    cli.parse(['node', 'lorakit', ...argv], { run: false });
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
  } catch (e) {
    if (e instanceof LorakitError) {
      console.error(`lorakit: ${e.message} [${e.code}]`);
      process.exit(1);
    }
    if (e instanceof Error && e.name === 'CACError') {
      // cac's own usage errors: a missing argument or option value
      console.error(`lorakit: ${e.message}; see \`lorakit ${name ?? ''} --help\``);
      process.exit(1);
    }
    throw e;
  }
}
