"""FedSmoothLoRA's server side (spec methods-c §12; arXiv 2605.29460, wangzehao0704/FedSmoothLoRA@41404df), on plain
numpy arrays in float64.

Per LoRA module and round t, from the clients' uploads (B_c [d_out, r], A_c [r, d_in], each already the rank-r
SVD of the client's update, client side in src/federated/fedsmooth.ts):
1. full-rank aggregation: dW = sum_c p_c B_c A_c (rank up to K r), kept factored as the stack
   [p_1 B_1 | ... | p_K B_K] [A_1; ...; A_K] and never formed as a [d_out, d_in] matrix;
2. rank-r projection: the SVD of that product by QR of both stacks and an SVD of the (K r x K r) core,
   B_s = U_r sqrt(S_r), A_s = sqrt(S_r) V_r^T (the authors' split);
3. backbone merge: W <- W + s B_s A_s. The server never holds W; it keeps the merged product as factors too, so what a
   client needs to rebuild the backbone is "merged" (every earlier round's (B_s, A_s), stacked: rank r (t - 1)) plus
   "arrays" (this round's (B_s, A_s)); the client adds s (B_m A_m + B_s A_s) to its own W0. s (alpha / r) is the
   clients' business: the server only ever sees B A.
The part of dW that the projection drops, dW - B_s A_s, is not merged (the authors' code merges B_s A_s only): it
returns through round-matching, since client c restarts from W + s zeta (B_c A_c - B_s A_s), and with zeta = 1 and
every client taking part, sum_c p_c (B_c A_c - B_s A_s) = dW - B_s A_s exactly (tests/test_fedsmooth.py).
Not here: the clients' inits (round-matching, gradient-aligned: TypeScript), messages (server_app.py).
"""

from __future__ import annotations

import math

import numpy as np

from .strategies import Update, lora_pairs, weights


def factored_svd(b: np.ndarray, a: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rank-r truncated SVD of the product b a (b [m, k], a [k, n]) without forming it: (B_r, A_r, s) with
    B_r = U_r sqrt(S_r) [m, r], A_r = sqrt(S_r) V_r^T [r, n] and every singular value s of b a.

    b = Qb Rb and a^T = Qa Ra give b a = Qb (Rb Ra^T) Qa^T, so the SVD of the small core Rb Ra^T = U' S V'^T gives
    b a = (Qb U') S (Qa V')^T. Cost O((m + n) k^2 + k^3) instead of O(m n k)."""
    qb, rb = np.linalg.qr(b.astype(np.float64))  # qb [m, k'], rb [k', k]
    qa, ra = np.linalg.qr(a.astype(np.float64).T)  # qa [n, k''], ra [k'', k]
    u, s, vt = np.linalg.svd(rb @ ra.T)  # core [k', k'']
    k = min(r, s.size)
    root = np.sqrt(s[:k])
    bs = np.zeros((b.shape[0], r))
    as_ = np.zeros((r, a.shape[1]))
    bs[:, :k] = (qb @ u[:, :k]) * root  # [m, r]; zero columns when the product has rank below r
    as_[:k, :] = root[:, None] * (vt[:k, :] @ qa.T)  # [r, n]
    return bs, as_, s


def aggregate_module(pairs: list[tuple[np.ndarray, np.ndarray]], p: np.ndarray, r: int):
    """(B_s, A_s) of one module: the rank-r SVD of sum_c p_c B_c A_c; pairs are (B_c, A_c)."""
    b = np.concatenate([pk * bk.astype(np.float64) for pk, (bk, _) in zip(p, pairs)], axis=1)  # [d_out, K r]
    a = np.concatenate([ak.astype(np.float64) for _, ak in pairs], axis=0)  # [K r, d_in]
    bs, as_, _ = factored_svd(b, a, r)
    return bs, as_


def zeta(rnd: int, rounds: int, mode: str, zeta0: float, zeta_min: float) -> float:
    """The round-matching weight of round `rnd` (1-based): constant zeta0, or the cosine decay
    zeta_min + (zeta0 - zeta_min)(1 + cos(pi t / T)) / 2 with t = rnd - 1 (the authors' round index from 0)."""
    if mode == "constant":
        return zeta0
    if mode == "decay":
        return zeta_min + 0.5 * (zeta0 - zeta_min) * (1 + math.cos(math.pi * (rnd - 1) / rounds))
    raise ValueError(f'fedsmooth-zeta-mode="{mode}": expected constant or decay')


class FedSmoothState:
    """The global state of a FedSmoothLoRA federation: this round's (B_s, A_s) and the merged earlier ones.

    Tensors keep the clients' names ("<module>.lora_A.weight", "<module>.lora_B.weight"); `merged` uses the same
    names for the stacked factors: merged B [d_out, r (t - 1)], merged A [r (t - 1), d_in]."""

    def __init__(self):
        self.lora: dict[str, np.ndarray] = {}
        self.merged: dict[str, np.ndarray] = {}

    def aggregate(self, updates: list[Update]) -> dict[str, np.ndarray]:
        """Folds the current global LoRA into `merged`, then projects the clients' full-rank average to rank r."""
        p = weights(updates)
        first = updates[0][1]
        new = {}
        for _, an, bn in lora_pairs(first):
            r = first[an].shape[0]
            pairs = [(u[bn], u[an]) for _, u in updates]
            new[bn], new[an] = aggregate_module(pairs, p, r)
        b_names = {bn for _, _, bn in lora_pairs(self.lora)}
        for name, v in self.lora.items():  # B stacks by columns, A by rows: merged B A = sum over rounds of B_s A_s
            axis = 1 if name in b_names else 0
            self.merged[name] = np.concatenate([self.merged[name], v], axis=axis) if name in self.merged else v
        self.lora = new
        return new

    def expected_shapes(self) -> dict[str, tuple] | None:
        """The shapes an update must have (None in round 1: clients must agree among themselves)."""
        return {k: v.shape for k, v in self.lora.items()} or None

