// TorchGenerator against values printed by torch 2.9.1: torch.empty(n).uniform_(lo, hi, generator=g) with
// g = torch.Generator(device="cpu").manual_seed(seed). Float32 values are compared exactly (bit for bit); the
// PEFT VeRA fixtures (test/peft/methods/vera.test.ts) compare 10k more values drawn by PEFT itself.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TorchGenerator } from '../../src/linalg/index.ts';

const uniform = (seed: number | bigint, n: number, lo: number, hi: number) =>
  new TorchGenerator(seed).uniformFloat32(n, lo, hi);

test('uniform_ equals torch bit for bit, including a value where rounding the product to float32 first would differ', () => {
  const b = Math.sqrt(6 / 128);
  // element 7 is 0.10552491247653961 when x·(hi − lo) is rounded to float32 before adding lo
  const torch = [
    -0.214660182595253, -0.17079347372055054, -0.09273292869329453, -0.20483456552028656, -0.01229134202003479,
    -0.1904752254486084, 0.11772136390209198, 0.10552491992712021, 0.04088558256626129, 0.16794686019420624,
  ];
  assert.deepEqual([...uniform(3, 10, -b, b)], torch);
});

test('the stream continues across the Mersenne Twister state refills (values 622–626 and 1246–1249)', () => {
  const v = uniform(7, 1300, -1, 2);
  assert.deepEqual(
    [...v.subarray(622, 627)],
    [0.8796570301055908, -0.7622908353805542, 0.4368441700935364, 1.9372799396514893, -0.37703174352645874],
  );
  assert.deepEqual(
    [...v.subarray(1246, 1250)],
    [1.7132035493850708, 0.895290195941925, 0.8656501770019531, 0.21747201681137085],
  );
});

test('consecutive draws from one generator continue one stream, as two uniform_ calls on one torch.Generator', () => {
  const g = new TorchGenerator(5);
  assert.deepEqual(
    [...g.uniformFloat32(3, -0.5, 0.5)],
    [0.33025187253952026, -0.37388908863067627, 0.4074696898460388],
  );
  assert.deepEqual([...g.uniformFloat32(2, 0, 10)], [8.199270248413086, 9.201034545898438]);
});

test("seeds are taken as torch takes them: the low 32 bits of the uint64 (negative seeds in two's complement)", () => {
  assert.deepEqual([...uniform(-1, 2, 0, 1)], [0.9937993884086609, 0.5713063478469849]);
  assert.deepEqual(uniform(2 ** 32 + 3, 10, -1, 1), uniform(3, 10, -1, 1));
  assert.deepEqual(uniform(2n ** 64n - 1n, 4, 0, 1), uniform(-1, 4, 0, 1));
});

test('bfloat16 uniform_ equals torch: 8 bits of one draw per value, rounded to bfloat16', () => {
  const b = 1 / Math.sqrt(64);
  assert.deepEqual(
    [...new TorchGenerator(3).uniformBfloat16(10, -b, b)],
    [
      -0.021484375, 0.0234375, 0.1181640625, 0.0029296875, 0.0546875, 0.0703125, -0.125, -0.1044921875, 0.1220703125,
      0.0185546875,
    ],
  );
  // kaiming_uniform_(empty((4, 1, 5), dtype=bfloat16), a=√5): fan_in 1·5, bound 1/√5 (PEFT's RandLoRA bases)
  const k = new TorchGenerator(0).uniformBfloat16(20, -1 / Math.sqrt(5), 1 / Math.sqrt(5));
  assert.deepEqual(
    [...k.subarray(0, 6)],
    [0.1533203125, -0.283203125, -0.038330078125, 0.2236328125, -0.212890625, 0.4296875],
  );
  assert.deepEqual([...k.subarray(16)], [-0.1396484375, 0.0419921875, -0.244140625, 0.2275390625]);
});

test('bernoulli on a tensor of probabilities equals torch 2.9.1, with the global seed and with a generator', () => {
  // torch.manual_seed(123); torch.bernoulli(torch.full((40,), 0.3))
  const global = [
    1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1,
    0,
  ];
  assert.deepEqual([...new TorchGenerator(123).bernoulliFloat32(40, 0.3)], global);
  // torch.bernoulli(torch.full((2, 5), 0.77), generator=torch.Generator().manual_seed(9)), in memory order
  assert.deepEqual([...new TorchGenerator(9).bernoulliFloat32(10, 0.77)], [1, 1, 1, 0, 0, 0, 1, 0, 1, 1]);
  // skip(n) is n draws: the 11th..20th values of one stream
  const g = new TorchGenerator(9);
  g.skip(10);
  assert.deepEqual([...g.bernoulliFloat32(10, 0.77)], [...new TorchGenerator(9).bernoulliFloat32(20, 0.77).slice(10)]);
});
