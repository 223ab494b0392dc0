"""Aggregation rules for federated LoRA, on plain numpy arrays in float64 (spec: methods-c §9-§11).

An update is (weight, tensors): the client's example count and its adapter tensors by name. LoRA factors pair up
by name: "<module>.lora_A" is A [r, d_in] and "<module>.lora_B" is B [d_out, r]. Weights are normalised to
p_k = n_k / sum n.

- fedavg: every tensor is averaged on its own: B = sum p_k B_k, A = sum p_k A_k. The applied update B A then
  differs from the ideal sum p_k B_k A_k by the cross-covariance sum p_k (B_k - B)(A_k - A) (fedavg_bias).
- ffa (FFA-LoRA): A is frozen at its seeded initialisation and shared, only B travels, so averaging B is exact:
  sum p_k B_k A = (sum p_k B_k) A. The rule is fedavg over what arrives (B only).
- fair (LoRA-FAIR): fedavg, then a server residual dB per module so that (B + dB) A approaches the ideal
  T = sum p_k B_k A_k in direction: minimise 1 - cos(P, T) + lam ||dB||_F^2 with P = (B + dB) A, by gradient
  descent from dB = 0; clients start the next round from (A, B + dB) (Avg-Initial).
Not here: messages and rounds (server_app.py).
"""

from __future__ import annotations

import numpy as np

Update = tuple[float, dict[str, np.ndarray]]


def weights(updates: list[Update]) -> np.ndarray:
    """p_k = n_k / sum n (float64)."""
    n = np.array([w for w, _ in updates], dtype=np.float64)
    if n.sum() <= 0:
        raise ValueError("updates carry no examples: every weight is 0")
    return n / n.sum()


def fedavg(updates: list[Update]) -> dict[str, np.ndarray]:
    """Weighted mean of each tensor, in float64."""
    p = weights(updates)
    names = updates[0][1].keys()
    return {k: sum(pk * u[k].astype(np.float64) for pk, (_, u) in zip(p, updates)) for k in names}


def lora_pairs(names) -> list[tuple[str, str, str]]:
    """(module, A name, B name) of every module with both factors, in name order. Names are "<module>.lora_A" or,
    as lorakit and PEFT write them, "<module>.lora_A.weight"."""
    names = set(names)
    out = []
    for n in sorted(names):
        for suffix in (".lora_A", ".lora_A.weight"):
            if n.endswith(suffix):
                b = n[: -len(suffix)] + suffix.replace("lora_A", "lora_B")
                if b in names:
                    out.append((n[: -len(suffix)], n, b))
    return out


def fedavg_bias(updates: list[Update]) -> dict[str, np.ndarray]:
    """Per module, sum p_k (B_k - B)(A_k - A): what fedavg's B A misses of the ideal sum p_k B_k A_k."""
    p = weights(updates)
    avg = fedavg(updates)
    out = {}
    for m, an, bn in lora_pairs(avg):
        a, b = avg[an], avg[bn]
        out[m] = sum(pk * (u[bn] - b) @ (u[an] - a) for pk, (_, u) in zip(p, updates))
    return out


def ideal_delta(updates: list[Update], module: str) -> np.ndarray:
    """T = sum p_k B_k A_k for one module (float64, [d_out, d_in])."""
    p = weights(updates)
    _, an, bn = next(x for x in lora_pairs(updates[0][1]) if x[0] == module)
    return sum(pk * u[bn].astype(np.float64) @ u[an].astype(np.float64) for pk, (_, u) in zip(p, updates))


def fair_objective(db: np.ndarray, b: np.ndarray, a: np.ndarray, t: np.ndarray, lam: float) -> float:
    """1 - cos(vec((B + dB) A), vec(T)) + lam ||dB||_F^2, with the dense [d_out, d_in] matrices (the reference)."""
    p = (b + db) @ a
    return 1.0 - float(np.sum(p * t) / (np.linalg.norm(p) * np.linalg.norm(t))) + lam * float(np.sum(db * db))


def fair_gradient(db: np.ndarray, b: np.ndarray, a: np.ndarray, t: np.ndarray, lam: float) -> np.ndarray:
    """Gradient of fair_objective in dB (closed form).

    With P = (B + dB) A: d(1 - cos)/dP = -T / (|P||T|) + (<P, T> / (|P|^3 |T|)) P, and dP = d(dB) A gives
    d/d(dB) = (d/dP) A^T; the regulariser adds 2 lam dB.
    """
    p = (b + db) @ a
    np_, nt = np.linalg.norm(p), np.linalg.norm(t)
    g_p = -t / (np_ * nt) + (np.sum(p * t) / (np_**3 * nt)) * p
    return g_p @ a.T + 2.0 * lam * db


class FairModule:
    """The LoRA-FAIR objective of one module in factored form: never a [d_out, d_in] product.

    With B' = B + dB, G = A A^T and TA = T A^T = sum p_k B_k (A_k A^T) (both from r x r products):
    <P, T> = <B', TA>, |P|^2 = <B' G, B'>, |T|^2 = sum_jk p_j p_k <B_j^T B_k, (A_k A_j^T)^T>, and the gradient
    (d/dP) A^T = -TA / (|P||T|) + (<P, T> / (|P|^3 |T|)) B' G. Cost O(d r^2) a step instead of O(d_out d_in r);
    equal to fair_objective / fair_gradient (tests/test_strategies.py).
    """

    def __init__(self, b, a, pairs, p):
        self.b, self.a = b, a
        self.g = a @ a.T
        self.ta = sum(pk * bk @ (ak @ a.T) for pk, (bk, ak) in zip(p, pairs))
        t2 = sum(
            pj * pk * np.sum((bj.T @ bk) * (ak @ aj.T).T)
            for pj, (bj, aj) in zip(p, pairs)
            for pk, (bk, ak) in zip(p, pairs)
        )
        self.tnorm = float(np.sqrt(max(t2, 0.0)))

    def _parts(self, db):
        b1 = self.b + db
        b1g = b1 @ self.g
        return b1g, float(np.sum(b1 * self.ta)), float(np.sqrt(max(np.sum(b1g * b1), 0.0)))

    def objective(self, db, lam):
        _, pt, pn = self._parts(db)
        return 1.0 - pt / (pn * self.tnorm) + lam * float(np.sum(db * db))

    def gradient(self, db, lam):
        b1g, pt, pn = self._parts(db)
        return -self.ta / (pn * self.tnorm) + (pt / (pn**3 * self.tnorm)) * b1g + 2.0 * lam * db

    def residual(self, lam, steps, lr):
        """dB from `steps` gradient-descent steps from 0 (the paper's solver), halving lr whenever a step would
        raise the objective, so the result is never worse than dB = 0."""
        db = np.zeros_like(self.b, dtype=np.float64)
        if self.tnorm == 0 or self._parts(db)[2] == 0:
            return db  # the cosine is undefined; nothing to align
        f = self.objective(db, lam)
        for _ in range(steps):
            trial = db - lr * self.gradient(db, lam)
            f_trial = self.objective(trial, lam)
            if f_trial > f:  # the cosine's gradient scales as 1/|P|: a step too long for this module, halve it
                lr /= 2
                continue
            db, f = trial, f_trial
        return db


def fair(updates: list[Update], lam: float = 0.01, steps: int = 1000, lr: float = 0.01) -> dict[str, np.ndarray]:
    """LoRA-FAIR: fedavg, then B <- B + dB per module."""
    avg = fedavg(updates)
    p = weights(updates)
    for _, an, bn in lora_pairs(avg):
        pairs = [(u[bn].astype(np.float64), u[an].astype(np.float64)) for _, u in updates]
        avg[bn] = avg[bn] + FairModule(avg[bn], avg[an], pairs, p).residual(lam, steps, lr)
    return avg


def aggregate(strategy: str, updates: list[Update], **opts) -> dict[str, np.ndarray]:
    """The aggregation of `strategy` ("fedavg", "ffa" or "fair")."""
    if strategy in ("fedavg", "ffa"):
        return fedavg(updates)
    if strategy == "fair":
        return fair(updates, lam=opts.get("lam", 0.01), steps=opts.get("steps", 1000), lr=opts.get("lr", 0.01))
    raise ValueError(f'unknown strategy "{strategy}"; expected fedavg, ffa or fair')


def check_update(tensors: dict[str, np.ndarray], expected: dict[str, tuple] | None, max_norm: float) -> str | None:
    """Why an update must be rejected (wrong names or shapes, NaN/Inf, a norm past max_norm), or None."""
    if not tensors:
        return "it carries no tensors"
    if expected is not None:
        if set(tensors) != set(expected):
            missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
            return f"its tensors differ from the global adapter's (missing {missing[:3]}, unexpected {extra[:3]})"
        for k, v in tensors.items():
            if tuple(v.shape) != tuple(expected[k]):
                return f"{k} has shape {tuple(v.shape)}, expected {tuple(expected[k])}"
    for k, v in tensors.items():
        if not np.all(np.isfinite(v)):
            return f"{k} holds NaN or Inf values"
        norm = float(np.linalg.norm(v.astype(np.float64)))
        if norm > max_norm:
            return f"{k} has Frobenius norm {norm:.4g}, above the bound max-norm={max_norm:g}"
    return None
