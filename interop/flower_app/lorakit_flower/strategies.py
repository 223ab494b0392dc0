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
    """1 - cos(vec((B + dB) A), vec(T)) + lam ||dB||_F^2."""
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


def fair_residual(b: np.ndarray, a: np.ndarray, t: np.ndarray, lam: float, steps: int, lr: float) -> np.ndarray:
    """dB from `steps` gradient-descent steps from 0 (the paper's solver), halving lr whenever a step would raise
    the objective, so the result is never worse than dB = 0."""
    db = np.zeros_like(b, dtype=np.float64)
    if np.linalg.norm((b @ a)) == 0 or np.linalg.norm(t) == 0:
        return db  # the cosine is undefined; nothing to align
    f = fair_objective(db, b, a, t, lam)
    for _ in range(steps):
        trial = db - lr * fair_gradient(db, b, a, t, lam)
        f_trial = fair_objective(trial, b, a, t, lam)
        if f_trial > f:  # the cosine's gradient scales as 1/|P|: a step too long for this module, halve it
            lr /= 2
            continue
        db, f = trial, f_trial
    return db


def fair(updates: list[Update], lam: float = 0.01, steps: int = 1000, lr: float = 0.01) -> dict[str, np.ndarray]:
    """LoRA-FAIR: fedavg, then B <- B + dB per module."""
    avg = fedavg(updates)
    for m, an, bn in lora_pairs(avg):
        a, b = avg[an], avg[bn]
        avg[bn] = b + fair_residual(b, a, ideal_delta(updates, m), lam, steps, lr)
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
