/**
 * A FedSmoothLoRA client's rounds (strategy "fedsmooth" of interop/flower_app; the algebra is fedsmooth.ts): before
 * evaluating or training it sets the adapter's frozen weights to the backbone the server's messages describe
 * (W0 + s·(merged + global), PeftModel.replaceFrozenWeight) and the LoRA's starting factors; after training it
 * turns the trained factors into the upload and remembers that upload for the next round's round-matching.
 * The full-weight gradients of the gradient-aligned init come from the platform's calibration hook
 * (train/calibrate.ts), differentiated at the round-matched backbone W + s·W_rm, over the round's first batches.
 * State lives in this object: a restarted client starts without round-matching (W_rm = 0), like a new one.
 * Not here: the Fleet protocol and the training loop (lora-client.ts), the server rule (the ServerApp).
 */
import { LorakitError } from '../errors.ts';
import type { LoadedModel } from '../models/index.ts';
import { type LayerInfo, type PeftModel, paramKey } from '../peft/index.ts';
import { fromMatrix, toMatrix } from '../peft/layers.ts';
import { causalLmCalibrator } from '../train/calibrate.ts';
import type { TokenDataset } from '../train/data/index.ts';
import { type Factors, gradientAligned, initFactors, roundMatching, shifted, uploadFactors } from './fedsmooth.ts';
import type { WireDType, WireTensor } from './npy.ts';

/** Options of FedSmoothClient. */
export interface FedSmoothClientOptions {
  model: LoadedModel;
  peft: PeftModel;
  /** The adapter (plain LoRA: A and B per layer) the client trains. */
  adapter: string;
  /** The client's training data (the calibration batches come from it) and batch size. */
  train: TokenDataset;
  batchSize: number;
  sendDtype?: WireDType;
}

/** One round's server settings (the "config" record). */
export interface FedSmoothRound {
  /** Round-matching weight ζ of this round. */
  zeta: number;
  /** Stabiliser γ of the gradient-aligned factors. */
  gamma: number;
  /** Calibration batches of the full-weight gradient; 0 turns the gradient-aligned init off. */
  gaBatches: number;
  /** Seed of the calibration batches' order (the round's data order). */
  dataSeed: number;
}

/** Tensors of a message record by wire name (module path + PEFT parameter name). */
export type WireTensors = ReadonlyMap<string, WireTensor>;

interface Layer {
  path: string;
  weightName: string;
  info: LayerInfo;
  scale: number;
  r: number;
  out: number;
  inp: number;
  /** Wire names (module path + PEFT parameter name) and graph-input keys of A and B. */
  names: { a: string; b: string };
  keys: { a: string; b: string };
}

const f64 = (x: Float32Array) => Float64Array.from(x);

/** Per-round state of one FedSmoothLoRA client. */
export class FedSmoothClient {
  private readonly layers: Layer[];
  /** The previous upload per layer path: round-matching's B_c·A_c. */
  private readonly last = new Map<string, Factors>();
  /** This round's gradient-aligned factors per layer path (null: none). */
  private readonly ga = new Map<string, Factors | null>();

  constructor(private readonly o: FedSmoothClientOptions) {
    const a = o.peft.get(o.adapter);
    this.layers = [...a.layers].map(([path, l]) => {
      const trainable = l.specs.filter((s) => s.trainable);
      const sa = trainable.find((s) => s.role === 'a');
      const sb = trainable.find((s) => s.role === 'b');
      if (a.resolved.method.name !== 'lora' || trainable.length !== 2 || !sa || !sb || l.info.conv) {
        throw new LorakitError(
          'LK_CONFIG_INVALID',
          `FedSmoothLoRA: ${path} trains ${trainable.map((s) => s.name).join(', ')} with ` +
            `${a.resolved.method.name}; the strategy merges B·A into the backbone, so it needs plain LoRA ` +
            '(peft_type LORA, no variant) on linear layers',
        );
      }
      return {
        path,
        weightName: l.module.weightName,
        info: l.info,
        scale: l.settings.scaling as number,
        r: sa.shape[0],
        out: sb.shape[0],
        inp: sa.shape[1],
        names: { a: `${path}.${sa.name}`, b: `${path}.${sb.name}` },
        keys: { a: paramKey(o.adapter, path, sa.name), b: paramKey(o.adapter, path, sb.name) },
      };
    });
  }

  private factors(l: Layer, t: WireTensors, what: string): Factors | null {
    const a = t.get(l.names.a);
    const b = t.get(l.names.b);
    if (!a && !b) return null;
    const k = a?.shape[0] ?? -1;
    if (!a || !b || a.shape.length !== 2 || b.shape.join(',') !== `${l.out},${k}` || a.shape[1] !== l.inp) {
      throw new LorakitError(
        'LK_SHAPE_MISMATCH',
        `FedSmoothLoRA: the server's ${what} for ${l.path} is A [${a?.shape ?? 'missing'}], ` +
          `B [${b?.shape ?? 'missing'}]; expected A [k, ${l.inp}] and B [${l.out}, k]`,
      );
    }
    return { a: f64(a.data), b: f64(b.data), rows: l.out, cols: l.inp, k };
  }

  private async w0(l: Layer): Promise<Float32Array> {
    return toMatrix(l.info, await this.o.peft.base.readWeight(l.weightName)); // [out, in]
  }

  /** The LoRA values of factors f, or zeros (the backbone alone) without them. */
  private setLora(l: Layer, f: Factors | null): [string, Float32Array][] {
    return [
      [l.keys.a, f ? Float32Array.from(f.a) : new Float32Array(l.r * l.inp)],
      [l.keys.b, f ? Float32Array.from(f.b) : new Float32Array(l.out * l.r)],
    ];
  }

  /** Sets the global model to evaluate: the LoRA (B_s, A_s) on W0 + s·B_m·A_m (before round 1: W0 alone). */
  async prepareEvaluate(global: WireTensors, merged: WireTensors): Promise<void> {
    const values = new Map<string, Float32Array>();
    for (const l of this.layers) {
      const w = shifted(await this.w0(l), [{ f: this.factors(l, merged, '"merged"'), c: l.scale }]);
      this.o.peft.replaceFrozenWeight(this.o.adapter, l.weightName, fromMatrix(l.info, w));
      for (const [k, v] of this.setLora(l, this.factors(l, global, 'global LoRA'))) values.set(k, v);
    }
    this.o.peft.setValues(this.o.adapter, values);
  }

  /**
   * Sets the round's start: backbone W − s·Ŵ_ga and LoRA = rank-r SVD(Ŵ_ga + W_rm), where W = W0 + s·(B_m·A_m +
   * B_s·A_s). Without Ŵ_ga and W_rm (round 1 with gaBatches 0) the LoRA is B = 0 with the A it has.
   */
  async prepareTrain(global: WireTensors, merged: WireTensors, round: FedSmoothRound): Promise<void> {
    const backbones = new Map<string, Float32Array>();
    const rms = new Map<string, Factors | null>();
    const atRm = new Map<string, Float32Array>();
    for (const l of this.layers) {
      const g = this.factors(l, global, 'global LoRA');
      const w = shifted(await this.w0(l), [
        { f: this.factors(l, merged, '"merged"'), c: l.scale },
        { f: g, c: l.scale },
      ]);
      const rm = roundMatching(this.last.get(l.path) ?? null, g, round.zeta);
      backbones.set(l.path, w);
      rms.set(l.path, rm);
      atRm.set(l.weightName, fromMatrix(l.info, shifted(w, [{ f: rm, c: l.scale }])));
    }
    let grads: Map<string, Float32Array> | null = null;
    if (round.gaBatches > 0) {
      const calibrate = causalLmCalibrator({
        model: this.o.model,
        train: this.o.train,
        batchSize: this.o.batchSize,
        seed: round.dataSeed,
        weights: atRm,
      });
      grads = await calibrate(
        this.layers.map((l) => l.info),
        round.gaBatches,
      );
    }
    const values = new Map<string, Float32Array>();
    const current = this.o.peft.trainableValues(this.o.adapter);
    for (const l of this.layers) {
      const grad = grads?.get(l.path);
      const ga = grad ? gradientAligned(toMatrix(l.info, grad), l.out, l.inp, l.r, round.gamma) : null;
      this.ga.set(l.path, ga);
      const init = initFactors(ga, rms.get(l.path)!, l.r);
      const base = shifted(backbones.get(l.path)!, [{ f: ga, c: -l.scale }]);
      this.o.peft.replaceFrozenWeight(this.o.adapter, l.weightName, fromMatrix(l.info, base));
      const lora = this.setLora(l, init);
      for (const [k, v] of lora) values.set(k, v);
      if (!init) values.set(l.keys.a, current.get(l.keys.a)!); // nothing to start from: A as it is, B = 0
    }
    this.o.peft.setValues(this.o.adapter, values);
  }

  /** The reply's tensors: per layer the rank-r SVD of B·A − Ŵ_ga, remembered for the next round-matching. */
  upload(params: ReadonlyMap<string, Float32Array>): Map<string, WireTensor> {
    const out = new Map<string, WireTensor>();
    for (const l of this.layers) {
      const a = params.get(l.keys.a)!;
      const b = params.get(l.keys.b)!;
      const trained: Factors = { a: f64(a), b: f64(b), rows: l.out, cols: l.inp, k: l.r };
      const up = uploadFactors(trained, this.ga.get(l.path) ?? null, l.r);
      this.last.set(l.path, up);
      const dtype = this.o.sendDtype ?? 'float32';
      out.set(l.names.a, { dtype, shape: [l.r, l.inp], data: Float32Array.from(up.a) });
      out.set(l.names.b, { dtype, shape: [l.out, l.r], data: Float32Array.from(up.b) });
    }
    return out;
  }
}
