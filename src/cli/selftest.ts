// `lorakit selftest`: builds a small regression graph, trains it a few steps, prints the loss going down.
import type { CommandModule } from './main.ts';

export const register: CommandModule['register'] = (cli) => {
  cli.command('selftest', 'Run a tiny training step on ONNX Runtime to check the installation').action(async () => {
    const { Graph } = await import('../graph/index.ts');
    const { compile, shutdownRuntime } = await import('../runtime/index.ts');
    const { adamw, addTrainStep, TrainStepRunner } = await import('../optim/index.ts');
    const g = new Graph('selftest');
    const x = g.input('x', 'f32', [64, 4]),
      y = g.input('y', 'f32', [64]),
      w = g.input('w', 'f32', [4, 1]);
    const err = x.matmul(w).squeeze(1).sub(y);
    const layout = addTrainStep(g, err.mul(err).mean(), { optimizer: adamw(), groups: [{ params: [w] }] });
    const r = new TrainStepRunner(await compile(g), layout, { w: new Float32Array(4) });
    const xs = Float32Array.from({ length: 256 }, (_, i) => Math.sin(i * 1.7));
    const ys = Float32Array.from({ length: 64 }, (_, i) => xs[i * 4] * 2 - xs[i * 4 + 3]);
    const first = (await r.step({ x: xs, y: ys }, 0.05)).loss;
    let last = first;
    for (let i = 0; i < 200; i++) last = (await r.step({ x: xs, y: ys }, 0.05)).loss;
    console.log(`selftest: loss ${first.toFixed(4)} -> ${last.toFixed(6)} in 201 steps on onnxruntime-node (cpu)`);
    await shutdownRuntime();
  });
};
