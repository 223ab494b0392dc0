// train/: the training loop over a TrainTask, lr schedules, checkpoints, metrics and plots. Other folders import
// from here. (The dataset layer, train/data/, has its own surface.)
export { Trainer, train, engineOptions, type TrainResult, type StopReason } from './trainer.ts';
export type { TrainOptions, ResolvedOptions } from './options.ts';
export { resolveOptions } from './options.ts';
export type {
  TrainTask,
  TaskGraph,
  TaskParamGroup,
  TrainBatch,
  BatchStream,
  DataPosition,
  ParamValues,
  EvalResult,
  StepInputContext,
  TaskSample,
} from './task.ts';
export { batchIterator } from './task.ts';
export { lossEvaluator, perplexity, type LossEvaluatorOptions } from './eval.ts';
export { causalLmTask, type CausalLmTaskOptions } from './causal-lm.ts';
export { adapterTraining, roleGroups, type AdapterTraining, type AdapterSaveSettings } from './adapter-task.ts';
export {
  HEAD_CHUNK_ROWS,
  causalLmLoss,
  eagerHeadNll,
  type CausalLmLoss,
  type CausalLmLossOptions,
} from './loss.ts';
export { causalLmCalibrator, type CalibratorOptions } from './calibrate.ts';
export { makeSchedule, warmupStepsFor, type LrSchedule, type ScheduleKind, type ScheduleOptions } from './schedule.ts';
export { StepEngine, optimizerGroups, type EngineOptions, type MicroBatch, type StepOutput } from './engine.ts';
export {
  loadCheckpoint,
  writeCheckpoint,
  latestCheckpoint,
  listCheckpoints,
  pruneCheckpoints,
  removeLeftovers,
  setLatest,
  checkpointStep,
  LATEST_FILE,
  CHECKPOINT_FILES,
  type Checkpoint,
  type CheckpointShapes,
  type TrainerState,
  type TensorMap,
} from './checkpoint.ts';
export {
  MetricsLog,
  Progress,
  formatDuration,
  formatRate,
  noticeSink,
  writeSamples,
  SAMPLES_DIR,
  type StepRecord,
  type ProgressMode,
  type Notice,
} from './report.ts';
export { runSettings, settingChanges, checkResume, type RunSettings, type SettingChange } from './resume.ts';
export { lossPlotSpec, renderLossPlot, writeLossPlot, type LossPoint, type LossPlotOptions } from './plot.ts';
export { loadRunConfig, applySet, runConfigSchema, type RunConfig } from './config.ts';
export { configReference, resolvedConfigYaml, runConfigJsonSchema, CONFIG_REFERENCE_PATH } from './config-doc.ts';
export { runTraining, type RunOutput } from './run.ts';
export {
  runSqueezeStages,
  annealingStages,
  type SqueezeStage,
  type SqueezeStageResult,
  type StagedSqueezeOutput,
} from './squeeze-stages.ts';
export {
  runPrune,
  finalPlan,
  type PruneOptions,
  type PruneOutput,
  type PruneReport,
  type ModelMeasure,
} from './prune.ts';
export { runLoram, recoverAdapterFolder, type LoramOptions, type LoramOutput } from './loram.ts';
export {
  segmentationTask,
  segmentationDice,
  segmentationLogits,
  bceWithLogits,
  type SegmentationSet,
  type SegmentationTaskOptions,
  type UNetSource,
} from './segmentation.ts';
export {
  segmentationRunSchema,
  type SegmentationRunConfig,
  type SegmentationRunResult,
  loadSegmentationConfig,
  readSegmentationSet,
  runSegmentation,
} from './segmentation-run.ts';
export * as transfer from './transfer/index.ts';
export { type RunTask, runTaskOf } from './run-task.ts';
export {
  diffusionTask,
  diffusionBatch,
  predictEpsilon,
  noiseMse,
  type DiffusionTaskOptions,
} from './diffusion.ts';
export {
  CANVAS,
  CANVAS_TOKENS,
  canvasPrompt,
  digitCanvases,
  digitSplit,
  drawCell,
  leftRightTokens,
  oneHotStates,
  PROMPT_FILE,
  PROMPT_KINDS,
  promptKindOf,
  promptStates,
  promptWidth,
  savePromptKind,
  type PromptKind,
  type CanvasOptions,
  type CanvasSet,
  type DigitImages,
} from './digit-canvas.ts';
export {
  CELL_CLASSES,
  canvasClasses,
  cellAccuracy,
  cellSet,
  classifyCell,
  scoreCanvases,
  trainCellClassifier,
  type CellClassifier,
} from './digit-classifier.ts';
export {
  diffusionRunSchema,
  loadDiffusionRun,
  parseDiffusionRun,
  runDiffusionTraining,
  type DiffusionRunConfig,
} from './diffusion-run.ts';
