// CMLoRA's frequency ordering: the radial amplitude profile against numpy (fft2, fftshift, integer radius bins, the
// authors' cal_mean_relative_log_amplitudes steps), the score on constructed smooth and sharp images, the split into
// high- and low-frequency lists, and the schedule the split implies against hand-written sequences.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertAllclose } from '../helpers.ts';
import {
  cmloraFrequencyOrder,
  cmloraFrequencyScore,
  cmloraSchedule,
  radialAmplitudeProfile,
} from '../../src/serve/index.ts';

/** x_i = sin(0.7 i) + cos(0.13 i²), row-major [h, w]: the image the numpy numbers below were computed from. */
const probe = (h: number, w: number) =>
  Float64Array.from({ length: h * w }, (_, i) => Math.sin(i * 0.7) + Math.cos(i * i * 0.13));

test('radial amplitude profile equals numpy (fft2 → fftshift → |·| → mean per integer radius), even and odd sizes', () => {
  // numpy 2.x: np.abs(np.fft.fftshift(np.fft.fft2(x))), R = hypot(X − w//2, Y − h//2).astype(int), mean per R
  const even = [
    11.250428111872429, 6.813730884721249, 15.943123501654096, 8.808195366368583, 7.876221985971883, 6.49953710877024,
    6.366806886105383, 8.833556969531884, 10.128350778046947,
  ];
  assertAllclose(radialAmplitudeProfile(probe(8, 16), 8, 16), even, { rtol: 1e-9, atol: 1e-9 });
  const odd = [7.8971969031978535, 6.7026765796865675, 4.946065836999921, 3.84987171562896];
  assertAllclose(radialAmplitudeProfile(probe(5, 7), 5, 7), odd, { rtol: 1e-9, atol: 1e-9 });
});

test('amplitude score: the tail of the max-normalised profile; 0 for a constant image, higher for sharper images', () => {
  const shape = [1, 1, 8, 16];
  // numpy: mean((profile / profile.max())[2:]) of the probe image
  assertAllclose([cmloraFrequencyScore(Float32Array.from(probe(8, 16)), shape, 2)], [0.5775512163576957], {
    rtol: 1e-6,
    atol: 1e-6,
  });
  assert.ok(cmloraFrequencyScore(new Float32Array(128).fill(0.3), shape) < 1e-12); // only the DC term
  const smooth = Float32Array.from({ length: 128 }, (_, i) => Math.cos((2 * Math.PI * (i % 16)) / 16));
  const sharp = Float32Array.from({ length: 128 }, (_, i) => (((i % 16) + Math.floor(i / 16)) % 2) * 2 - 1); // ±1 checks
  assert.ok(cmloraFrequencyScore(sharp, shape) > cmloraFrequencyScore(smooth, shape) + 0.1);
  // channel mean first, then the mean over images
  const two = new Float32Array(2 * 128);
  two.set(sharp, 0);
  two.set(smooth, 128);
  assertAllclose(
    [cmloraFrequencyScore(two, [2, 1, 8, 16])],
    [(cmloraFrequencyScore(sharp, shape) + cmloraFrequencyScore(smooth, shape)) / 2],
    { rtol: 1e-12, atol: 1e-12 },
  );
  assertAllclose(
    [cmloraFrequencyScore(two, [1, 2, 8, 16])],
    [
      cmloraFrequencyScore(
        sharp.map((v, i) => (v + smooth[i]) / 2),
        shape,
      ),
    ],
    { rtol: 1e-6, atol: 1e-6 },
  );
  assert.throws(() => cmloraFrequencyScore(sharp, [1, 1, 8, 8]), /LK_SHAPE_MISMATCH|values/);
});

test('frequency order: scores ≥ threshold form the high list (first), each list by falling score', () => {
  assert.deepEqual(cmloraFrequencyOrder([0.2, 0.5, 0.1, 0.4]), { order: [1, 3, 0, 2], highCount: 2 }); // mean 0.3
  assert.deepEqual(cmloraFrequencyOrder([0.2, 0.5, 0.1, 0.4], 0.45), { order: [1, 3, 0, 2], highCount: 1 });
  assert.deepEqual(cmloraFrequencyOrder([0.3, 0.3]), { order: [0, 1], highCount: 2 });
  assert.throws(() => cmloraFrequencyOrder([]), /scores/);
});

test('CMLoRA schedule with a split: the high list takes turns, then the cycle shifts up by one past the switch step', () => {
  // 3 LoRAs, high list = passes 0 and 1, switch after step 4, refresh every step (no caching)
  const every = cmloraSchedule(10, 3, 1, { highCount: 2, switchStep: 4 });
  assert.deepEqual(
    every.steps.map((s) => s.dominant),
    [0, 1, 0, 1, 0, 2, 1, 2, 1, 2],
  );
  // cache interval 2: refreshes at 0, 2, 4, 6, 8; only the newly dominant LoRA runs in full after step 0
  const cached = cmloraSchedule(10, 3, 2, { highCount: 2, switchStep: 4 });
  assert.deepEqual(
    cached.steps.map((s) => s.refreshed),
    [0, null, 1, null, 0, null, 2, null, 1, null],
  );
  // step 5 is past the switch before any refresh: the code's weight index ((k − 1) mod 2) + 1 already shifts
  assert.deepEqual(
    cached.steps.map((s) => s.dominant),
    [0, 0, 1, 1, 0, 1, 2, 2, 1, 1],
  );
  assert.deepEqual(cached.steps[6].full, [false, false, true]);
  assert.deepEqual(cached.steps[0].full, [true, true, true]);
  // every LoRA in one list (or none in it): the plain schedule
  for (const highCount of [0, 3])
    assert.deepEqual(cmloraSchedule(10, 3, 2, { highCount, switchStep: 4 }), cmloraSchedule(10, 3, 2));
  assert.throws(() => cmloraSchedule(10, 3, 2, { highCount: 4 }), /highCount/);
});
