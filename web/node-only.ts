/**
 * What the browser build gets for the Node-only modules a few library files import but the page never reaches
 * (web/vite.config.ts resolves them here): the ORT worker thread (node:worker_threads; the page's Web Worker takes
 * that role), progress bars (cli-progress), the loss plot (vega; the page draws its own chart) and node:stream.
 * Each throws, naming what is unavailable, if it is ever used. Not here: the host seam (src/io/host.browser.ts).
 */

function unavailable(what: string): never {
  throw new Error(`lorakit in a browser: ${what} is Node-only and not available here`);
}

/** node:worker_threads' Worker. */
export class Worker {
  constructor() {
    unavailable('a worker thread (CompileOptions.worker)');
  }
}

/** node:stream's Writable. */
export class Writable {
  constructor() {
    unavailable('node:stream');
  }
}

/** vega's parse and View (the trainer's loss.svg; pass plot: false). */
export function parse(): never {
  return unavailable('the loss plot (vega)');
}
export class View {
  constructor() {
    unavailable('the loss plot (vega)');
  }
}

/** cli-progress's default export (progress bars; pass progress: 'none'). */
export default {
  SingleBar: class {
    constructor() {
      unavailable('a progress bar (cli-progress)');
    }
  },
  Presets: {},
};
