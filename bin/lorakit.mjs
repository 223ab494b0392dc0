#!/usr/bin/env node
// The lorakit command. The library is TypeScript run through tsx's loader, so no build step stands between a
// fresh clone and `npx lorakit` (decision in docs/decisions.md).
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
await main(process.argv.slice(2));
