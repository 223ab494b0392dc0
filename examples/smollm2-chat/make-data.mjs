// Turns the shared Alpaca subset (../shared/data/alpaca/alpaca_5000.json, CC BY-NC 4.0: kept out of the
// repository) into chat records `{messages: [{role: user}, {role: assistant}]}` so that the run renders them with the
// model's own chat template (SmolLM2's ChatML) instead of Alpaca's "### Instruction:" prompt. Writes
// runs/smollm2-chat/train.jsonl (the first 4,936 records) and valid.jsonl (the last 64, never trained on).
// It is not the training run (run.yaml) and changes no record's text.
//   node examples/smollm2-chat/make-data.mjs
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const src = join(repo, '..', 'shared', 'data', 'alpaca', 'alpaca_5000.json');
const out = join(repo, 'runs', 'smollm2-chat');
const HELD_OUT = 64;

// The user turn is the instruction, then the input (when there is one) after a blank line: what a person would type.
const chat = (r) => ({
  messages: [
    { role: 'user', content: r.input?.trim() ? `${r.instruction}\n\n${r.input}` : r.instruction },
    { role: 'assistant', content: r.output },
  ],
});

const records = JSON.parse(readFileSync(src, 'utf8'));
const lines = (rs) => `${rs.map((r) => JSON.stringify(chat(r))).join('\n')}\n`;
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'train.jsonl'), lines(records.slice(0, records.length - HELD_OUT)));
writeFileSync(join(out, 'valid.jsonl'), lines(records.slice(records.length - HELD_OUT)));
console.log(`${records.length - HELD_OUT} train and ${HELD_OUT} held-out chat records in ${out}`);
