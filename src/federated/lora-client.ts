/**
 * A lorakit node of a Flower federation that trains an adapter (`lorakit fl-client` is a shell over this): the
 * client's run config names the base model, its own data and the adapter; the ServerApp (interop/flower_app) sends
 * the rounds. Per message:
 * - "train": start from the global adapter tensors the message carries (none in round 1: the adapter as the
 *   server's `seed` initialises it, the same on every client), train `local-steps` optimizer steps with the
 *   Trainer on the local data, reply with the trained tensors and `num-examples` (the local training rows, FedAvg's
 *   weight) and the mean train loss. With `freeze-a` (FFA-LoRA), every role-"a" tensor keeps its seeded value
 *   (its group's lr ratio and weight decay are 0, so AdamW leaves it bit-identical) and only the others travel.
 * - "evaluate": the mean loss of the global adapter on the client's held-out rows.
 * - strategy "fedsmooth" (FedSmoothLoRA): the messages also carry "merged" factors, and FedSmoothClient sets the
 *   backbone and the LoRA's start before each message and turns the trained factors into the upload.
 * Tensors travel under their module path and PEFT parameter name ("model.layers.0.self_attn.q_proj.lora_A").
 * Not here: the Fleet API (fleet.ts, client.ts), aggregation (the ServerApp).
 */
import { join, mkdir } from '../io/host.ts';
import { LorakitError } from '../errors.ts';
import { HfTokenizer } from '../io/index.ts';
import { loadModel } from '../models/index.ts';
import { PeftModel, adaptable, paramKey } from '../peft/index.ts';
import { type RunConfig, type TrainTask, causalLmTask, train } from '../train/index.ts';
import { noticeSink } from '../train/report.ts';
import { loadRunData } from '../train/run-data.ts';
import { type FleetClientOptions, type FleetClientSummary, runFleetClient } from './client.ts';
import { FedSmoothClient, type WireTensors } from './fedsmooth-client.ts';
import type { FlowerMessage } from './message.ts';
import type { WireDType, WireTensor } from './npy.ts';
import { type ConfigValue, type RecordDict, metricRecord, recordDict } from './records.ts';

/** Options of runLoraClient. */
export interface LoraClientOptions extends FleetClientOptions {
  /** The client's run config: model, its own data (held_out or validation_file for "evaluate"), adapter, batch size. */
  config: RunConfig;
  /** The dtype tensors are sent in (default float32). */
  sendDtype?: WireDType;
}

/** One answered message. */
export interface LoraRoundRecord {
  type: string;
  round: number;
  loss: number;
  examples: number;
  seconds: number;
}

/** What runLoraClient did. */
export interface LoraClientResult extends FleetClientSummary {
  rounds: LoraRoundRecord[];
}

const ADAPTER = 'default';

/** Joins the federation at `o.superlink` and answers its train and evaluate messages until the run finishes. */
export async function runLoraClient(o: LoraClientOptions): Promise<LoraClientResult> {
  const c = o.config;
  const model = await loadModel(c.model);
  try {
    const tokenizer = await HfTokenizer.fromDir(model.dir);
    const data = await loadRunData(c.data, tokenizer, noticeSink({}));
    const peft = new PeftModel(adaptable(model));
    let seed: number | null = null;
    let smooth: FedSmoothClient | null = null;
    const rounds: LoraRoundRecord[] = [];
    const t = c.training;

    /** The adapter's trainable tensors by wire name (module path + parameter name), with roles. */
    const wire = () => {
      const out = new Map<string, { key: string; role: string; shape: number[] }>();
      for (const [path, l] of peft.get(ADAPTER).layers) {
        for (const s of l.specs) {
          if (s.trainable)
            out.set(`${path}.${s.name}`, { key: paramKey(ADAPTER, path, s.name), role: s.role, shape: s.shape });
        }
      }
      return out;
    };

    /** Resets the adapter to its seeded initialisation, then takes the global tensors the message carries. */
    const startFrom = async (msg: FlowerMessage, cfg: Map<string, ConfigValue>) => {
      const s = Number(cfg.get('seed') ?? t.seed);
      if (seed !== s) {
        if (seed !== null) peft.deleteAdapter(ADAPTER);
        await peft.addAdapter(ADAPTER, c.adapter, { seed: s, source: 'run config: adapter' });
        seed = s;
      }
      const init = wire();
      const values = new Map<string, Float32Array>();
      const initial = peft.trainableValues(ADAPTER);
      for (const w of init.values()) values.set(w.key, initial.get(w.key)!.slice());
      const arrays = msg.content?.get('arrays');
      if (arrays?.kind === 'array') {
        for (const [name, tensor] of arrays.arrays) {
          const w = init.get(name);
          if (!w) {
            throw new LorakitError(
              'LK_SHAPE_MISMATCH',
              `federated round: the server sent "${name}", which adapter (${c.adapter.peft_type ?? 'lora'}) of ` +
                `${c.model} does not have; every client must use the same adapter config`,
            );
          }
          if (tensor.shape.join(',') !== w.shape.join(',')) {
            throw new LorakitError(
              'LK_SHAPE_MISMATCH',
              `federated round: "${name}" is [${tensor.shape}], here [${w.shape}]`,
            );
          }
          values.set(w.key, tensor.data);
        }
      }
      peft.setValues(ADAPTER, values);
      return init;
    };

    // FedSmoothLoRA's LoRA lives on a moved backbone: a round's checkpoint keeps the trained factors as they are
    const task = (dataSeed: number, freezeA: boolean, convertToBase = true): TrainTask => {
      const base = causalLmTask({
        model,
        peft,
        adapter: ADAPTER,
        train: data.train,
        eval: data.eval,
        batchSize: t.per_device_train_batch_size,
        dataSeed,
        baseModelName: c.model,
        convertToBase,
      });
      if (!freezeA) return base;
      return {
        ...base,
        build: () => {
          const g = base.build();
          // FFA-LoRA: A keeps its seeded init; lr ratio 0 and no decay make AdamW's update exactly zero
          return { ...g, groups: g.groups.map((gr) => (gr.name === 'A' ? { ...gr, lrRatio: 0, weightDecay: 0 } : gr)) };
        },
      };
    };

    const handle = async (msg: FlowerMessage): Promise<RecordDict> => {
      const started = Date.now();
      const cfgRecord = msg.content?.get('config');
      const cfg = cfgRecord?.kind === 'config' ? cfgRecord.values : new Map<string, ConfigValue>();
      const round = Number(cfg.get('server-round') ?? 0);
      const freezeA = cfg.get('freeze-a') === true;
      const type = msg.metadata.messageType;
      o.log?.(`round ${round} ${type}: started`); // the message is pulled; the reply is not sent yet
      const names = await startFrom(msg, cfg);
      const fedsmooth = cfg.get('strategy') === 'fedsmooth';
      const record = (key: string): WireTensors => {
        const r = msg.content?.get(key);
        return r?.kind === 'array' ? r.arrays : new Map();
      };
      if (fedsmooth) {
        smooth ??= new FedSmoothClient({
          model,
          peft,
          adapter: ADAPTER,
          train: data.train,
          batchSize: t.per_device_train_batch_size,
          sendDtype: o.sendDtype,
        });
        if (type === 'evaluate') await smooth.prepareEvaluate(record('arrays'), record('merged'));
      }
      if (type === 'evaluate') {
        const tk = task(t.seed, false);
        if (!tk.evaluate || !data.eval) {
          throw new LorakitError(
            'LK_CONFIG_INVALID',
            'federated evaluate: the run config has no eval data (data.held_out)',
          );
        }
        const ev = await tk.evaluate(peft.trainableValues(ADAPTER));
        rounds.push({ type, round, loss: ev.loss, examples: data.eval.size, seconds: (Date.now() - started) / 1000 });
        o.log?.(`round ${round} evaluate: loss ${ev.loss.toFixed(4)} on ${data.eval.size} rows`);
        return recordDict({ metrics: metricRecord({ 'num-examples': BigInt(data.eval.size), 'eval-loss': ev.loss }) });
      }
      if (type !== 'train')
        throw new LorakitError('LK_UNSUPPORTED', `federated: message type "${type}" (train, evaluate)`);
      const steps = Number(cfg.get('local-steps') ?? t.max_steps ?? 10);
      const lr = Number(cfg.get('lr') ?? t.learning_rate);
      const outputDir = join(c.output_dir, `round-${round}`);
      await mkdir(outputDir, { recursive: true });
      const dataSeed = (seed ?? 0) * 100003 + round;
      if (smooth && fedsmooth) {
        await smooth.prepareTrain(record('arrays'), record('merged'), {
          zeta: Number(cfg.get('zeta') ?? 1),
          gamma: Number(cfg.get('gamma') ?? 64),
          gaBatches: Number(cfg.get('ga-batches') ?? 0),
          dataSeed,
        });
      }
      const result = await train(task(dataSeed, freezeA, !fedsmooth), {
        outputDir,
        steps,
        lr,
        schedule: 'constant',
        gradientAccumulation: t.gradient_accumulation_steps,
        clipNorm: t.max_grad_norm ? t.max_grad_norm : undefined,
        weightDecay: t.weight_decay,
        seed: t.seed + round,
        checkpointEvery: steps,
        keepCheckpoints: 1,
        progress: 'none',
        plot: false,
        signal: o.signal,
      });
      const losses = result.history.map((h) => h.loss);
      const loss = losses.reduce((a, b) => a + b, 0) / Math.max(1, losses.length);
      const arrays = smooth && fedsmooth ? smooth.upload(result.params) : new Map<string, WireTensor>();
      for (const [name, w] of fedsmooth ? [] : names) {
        if (freezeA && w.role === 'a') continue;
        arrays.set(name, { dtype: o.sendDtype ?? 'float32', shape: w.shape, data: result.params.get(w.key)! });
      }
      rounds.push({ type, round, loss, examples: data.train.size, seconds: (Date.now() - started) / 1000 });
      o.log?.(`round ${round} train: ${steps} steps, mean loss ${loss.toFixed(4)}, ${arrays.size} tensors back`);
      return recordDict({
        arrays: { kind: 'array', arrays },
        metrics: metricRecord({ 'num-examples': BigInt(data.train.size), 'train-loss': loss }),
      });
    };
    const summary = await runFleetClient(o, handle);
    return { ...summary, rounds };
  } finally {
    await model.close();
  }
}
