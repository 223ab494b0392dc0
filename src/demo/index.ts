// demo/: the embedded demo — the Brown corpus as clean text (brown.ts), the byte-level vocabulary (bytes.ts), byte
// batches (data.ts), the shared LM graphs (lm.ts), the bundled base model (base.ts) and the demo job (run.ts).
export { runDemo, demoLoraConfig, type DemoOptions, type DemoResult } from './run.ts';
export {
  readBrown,
  splitBrown,
  detokenize,
  detokenizeParagraph,
  brownDir,
  sideOf,
  byteCount,
  NON_FICTION_GENRES,
  FICTION_GENRES,
  type BrownFile,
  type BrownSplit,
  type Side,
} from './brown.ts';
export { BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE, byteTokenizerJson, byteTokenizerConfig, encodeDocument } from './bytes.ts';
export { WindowSampler, evalBatches, tokenStream, targetCount, IGNORE, type LmBatch } from './data.ts';
export {
  LmEvaluator,
  lmLossGraph,
  compileTrainStep,
  warmupCosine,
  type ContextFactory,
  type LmLossGraph,
  type TrainStepSpec,
} from './lm.ts';
export {
  DEMO_BASE_DIR,
  DEMO_SEQ_LEN,
  demoConfig,
  demoConfigJson,
  initDemoWeights,
  writeDemoModel,
  demoModelCard,
  type PretrainStats,
} from './base.ts';
