// The command list, in help order. Each command file exports `register(cli)` and is imported only when its
// command runs, so `lorakit info` never loads ONNX Runtime.
import type { CommandModule } from './main.ts';

export const COMMANDS: Record<string, { describe: string; load: () => Promise<CommandModule> }> = {
  info: {
    describe: 'Describe a Hugging Face model folder or a .gguf file: architecture, sizes, modules, tokenizer',
    load: () => import('./info.ts'),
  },
  generate: {
    describe: 'Generate text from a prompt with a causal LM folder, streaming to stdout',
    load: () => import('./generate.ts'),
  },
  serve: {
    describe: 'Serve a model and many adapters over an OpenAI-compatible HTTP API (continuous multi-adapter batching)',
    load: () => import('./serve.ts'),
  },
  train: {
    describe: 'Fine-tune an adapter from a YAML run config (--config run.yaml [--set key=value])',
    load: () => import('./train.ts'),
  },
  sample: {
    describe:
      'Draw images (a PNG grid) from a diffusion U-Net with LoRAs composed by merge, switch, composite or cmlora',
    load: () => import('./sample.ts'),
  },
  'fl-client': {
    describe: 'Join a Flower federation as a client: train the adapter of run.yaml on local data each round',
    load: () => import('./fl-client.ts'),
  },
  eval: {
    describe: 'Mean token loss and perplexity of a causal LM (optionally with an adapter) on a text or JSONL file',
    load: () => import('./eval.ts'),
  },
  merge: {
    describe: 'Merge a PEFT adapter into its base model and write a Hugging Face model folder',
    load: () => import('./merge.ts'),
  },
  squeeze: {
    describe: 'Compress a mergeable adapter to a lower-rank PEFT LoRA (truncated SVD of each ΔW)',
    load: () => import('./squeeze.ts'),
  },
  prune: {
    describe: 'LoRAPrune: train a LoRA while pruning heads and channels, then write the smaller merged model',
    load: () => import('./prune.ts'),
  },
  loram: {
    describe: 'LoRAM: train a LoRA on a pruned base, recover it to the full base and evaluate it there',
    load: () => import('./loram.ts'),
  },
  'merge-adapters': {
    describe: "Merge LoRA adapters into one PEFT LoRA folder (PEFT's add_weighted_adapter types, LoRA-LEGO)",
    load: () => import('./merge-adapters.ts'),
  },
  mixture: {
    describe: 'Train and evaluate a mixture of LoRAs with learned routing (ReMix, LoRA-Mixer)',
    load: () => import('./mixture.ts'),
  },
  'adaptive-merge': {
    describe: 'Merge recycled LoRAs with coefficients learned on a small target set (LoraHub, AdaMerging, Arrow, ...)',
    load: () => import('./adaptive-merge.ts'),
  },
  transfer: {
    describe:
      'Move an adapter to another base: Trans-LoRA (kit, lora) or Neural Organ Transplantation (organ, transplant)',
    load: () => import('./transfer.ts'),
  },
  export: {
    describe: 'Write an adapter, or the merged model, as GGUF for llama.cpp (--format gguf)',
    load: () => import('./export.ts'),
  },
  methods: {
    describe: 'List the adapter methods and variants: paper, PEFT name, merge, trainable parameters for a model',
    load: () => import('./methods.ts'),
  },
  cache: {
    describe:
      "Show (info) or empty (clear) lorakit's caches: compiled sessions, tokenised datasets, GGUF model folders",
    load: () => import('./cache.ts'),
  },
  demo: {
    describe: 'Train a LoRA adapter on the bundled byte-level model and Brown-corpus fiction (no download, ~2 minutes)',
    load: () => import('./demo.ts'),
  },
  selftest: {
    describe: 'Train a tiny graph on ONNX Runtime to check the installation',
    load: () => import('./selftest.ts'),
  },
};
