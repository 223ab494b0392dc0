/**
 * k-means (squared Euclidean) for LoRA-LEGO's rank-wise clustering: k-means++ seeding (Arthur & Vassilvitskii 2007)
 * from a seeded lorakit Rng, Lloyd iterations until the assignment stops changing, several restarts keeping the
 * lowest inertia. Float64 throughout; points are rows of one [n, d] array. A cluster that loses all its points is
 * re-seeded with the point farthest from its centroid, so every returned cluster is non-empty when k ≤ n.
 * Not here: what the points are (lego.ts).
 */
import { LorakitError } from '../../errors.ts';
import { Rng } from '../../linalg/index.ts';

/** Options of kmeans. */
export interface KmeansOptions {
  /** Restarts from new k-means++ seeds (default 8); the lowest inertia wins. */
  restarts?: number;
  /** Lloyd iterations per restart at most (default 100). */
  iterations?: number;
  /** Seed of the k-means++ draws (default 0). */
  seed?: number;
}

/** A clustering: centroids [k, d], the cluster of each point, and Σ ‖x − μ(x)‖². */
export interface Kmeans {
  centroids: Float64Array;
  assign: Int32Array;
  inertia: number;
}

/** ‖x_i − c_j‖² for rows i of x and j of c ([·, d]). */
export function sqDist(x: Float64Array, i: number, c: Float64Array, j: number, d: number): number {
  let s = 0;
  for (let e = 0; e < d; e++) {
    const t = x[i * d + e] - c[j * d + e];
    s += t * t;
  }
  return s;
}

/** The nearest centroid of every point (ties: the lower index) and the inertia of that assignment. */
export function assignNearest(x: Float64Array, n: number, c: Float64Array, k: number, d: number) {
  const assign = new Int32Array(n);
  let inertia = 0;
  for (let i = 0; i < n; i++) {
    let best = 0;
    let bd = Infinity;
    for (let j = 0; j < k; j++) {
      const dd = sqDist(x, i, c, j, d);
      if (dd < bd) {
        bd = dd;
        best = j;
      }
    }
    assign[i] = best;
    inertia += bd;
  }
  return { assign, inertia };
}

/** The mean of each cluster's points ([k, d]); an empty cluster keeps its previous centroid (re-seeded by the caller). */
export function clusterMeans(x: Float64Array, n: number, assign: Int32Array, prev: Float64Array, k: number, d: number) {
  const c = new Float64Array(k * d);
  const count = new Int32Array(k);
  for (let i = 0; i < n; i++) {
    count[assign[i]]++;
    for (let e = 0; e < d; e++) c[assign[i] * d + e] += x[i * d + e];
  }
  for (let j = 0; j < k; j++) {
    if (count[j] === 0) c.set(prev.subarray(j * d, j * d + d), j * d);
    else for (let e = 0; e < d; e++) c[j * d + e] /= count[j];
  }
  return { c, count };
}

/** k-means++ seeding: the first centre uniformly, each next one with probability ∝ its squared distance. */
function seedPlusPlus(x: Float64Array, n: number, k: number, d: number, rng: Rng): Float64Array {
  const c = new Float64Array(k * d);
  const first = Math.min(n - 1, Math.floor(rng.next() * n));
  c.set(x.subarray(first * d, first * d + d), 0);
  const dist = Float64Array.from({ length: n }, (_, i) => sqDist(x, i, c, 0, d));
  for (let j = 1; j < k; j++) {
    const total = dist.reduce((s, v) => s + v, 0);
    let pick = n - 1;
    if (total > 0) {
      let u = rng.next() * total;
      for (let i = 0; i < n; i++) {
        u -= dist[i];
        if (u < 0) {
          pick = i;
          break;
        }
      }
    } else pick = Math.min(n - 1, Math.floor(rng.next() * n)); // all points coincide with centres
    c.set(x.subarray(pick * d, pick * d + d), j * d);
    for (let i = 0; i < n; i++) dist[i] = Math.min(dist[i], sqDist(x, i, c, j, d));
  }
  return c;
}

/** k-means of the n rows of x ([n, d]) into k ≤ n clusters. */
export function kmeans(x: Float64Array, n: number, d: number, k: number, o: KmeansOptions = {}): Kmeans {
  if (!Number.isInteger(k) || k < 1 || k > n || x.length !== n * d)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `kmeans: need 1 <= k <= n and x of [n, d], got k=${k}, n=${n}, d=${d}`,
    );
  const rng = new Rng(o.seed ?? 0);
  let best: Kmeans | null = null;
  for (let r = 0; r < (o.restarts ?? 8); r++) {
    let c = seedPlusPlus(x, n, k, d, rng);
    let { assign, inertia } = assignNearest(x, n, c, k, d);
    for (let it = 0; it < (o.iterations ?? 100); it++) {
      const means = clusterMeans(x, n, assign, c, k, d);
      c = means.c;
      // an empty cluster takes the point farthest from its own centroid
      for (let j = 0; j < k; j++) {
        if (means.count[j] > 0) continue;
        let far = 0;
        let fd = -1;
        for (let i = 0; i < n; i++) {
          const dd = sqDist(x, i, c, assign[i], d);
          if (dd > fd) [fd, far] = [dd, i];
        }
        c.set(x.subarray(far * d, far * d + d), j * d);
        assign[far] = j;
      }
      const next = assignNearest(x, n, c, k, d);
      const same = next.assign.every((v, i) => v === assign[i]);
      ({ assign, inertia } = next);
      if (same) break;
    }
    c = clusterMeans(x, n, assign, c, k, d).c; // centroids = means of the final assignment
    inertia = 0;
    for (let i = 0; i < n; i++) inertia += sqDist(x, i, c, assign[i], d);
    if (best === null || inertia < best.inertia) best = { centroids: c, assign, inertia };
  }
  return best!;
}
