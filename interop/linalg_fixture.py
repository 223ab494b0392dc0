"""Reference decompositions from torch for lorakit's linalg tests: torch.linalg.qr (LAPACK geqrf/orgqr, whose signs
lorakit's Householder QR reproduces), torch.linalg.lu (LAPACK getrf, whose row pivots lorakit's LU reproduces, ties
included: getrf takes the first row of largest |value|) and torch.svd_lowrank (the randomized SVD behind PEFT's
`init_lora_weights="pissa_niter_K"` and LoRA-GA), with the Gaussian sketch it drew recorded, so lorakit can feed the
same sketch and must then agree up to rounding (and column signs of the final small SVD, which come from LAPACK).

    interop/.venv/bin/python interop/linalg_fixture.py     # rewrites test/fixtures/linalg/torch.json

The sketch is captured by seeding the global generator, drawing torch.randn(N, q) as svd_lowrank's first call does,
re-seeding, and calling svd_lowrank; the script re-runs the algorithm by hand from the recorded sketch and fails
unless that reproduces svd_lowrank's output exactly, which proves the recorded sketch is the one it used.
"""
import json

from common import REPO, check, run, setup

OUT = REPO / "test" / "fixtures" / "linalg"


def rows(t):
    return [[float(x) for x in row] for row in t.tolist()]


def spectrum_matrix(torch, m, n, s, dtype, seed):
    """U0·diag(s)·V0ᵀ with random orthonormal U0 [m, k], V0 [n, k] (k = len(s))."""
    g = torch.Generator().manual_seed(seed)
    k = len(s)
    u0 = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64)).Q
    v0 = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64)).Q
    return (u0 @ torch.diag(torch.tensor(s, dtype=torch.float64)) @ v0.T).to(dtype)


def by_hand(torch, a, omega, niter):
    """torch/_lowrank.py's _svd_lowrank, restated, from a given sketch."""
    m, n = a.shape
    at = a if m >= n else a.T
    q = torch.linalg.qr(at @ omega).Q
    for _ in range(niter):
        q = torch.linalg.qr(at.T @ q).Q
        q = torch.linalg.qr(at @ q).Q
    u, s, vh = torch.linalg.svd(q.T @ at, full_matrices=False)
    u, v = q @ u, vh.T
    return (u, s, v) if m >= n else (v, s, u)


def lowrank_case(torch, name, a, q, niter, seed):
    m, n = a.shape
    torch.manual_seed(seed)
    omega = torch.randn(min(m, n), q, dtype=a.dtype)
    torch.manual_seed(seed)
    u, s, v = torch.svd_lowrank(a, q=q, niter=niter)
    hu, hs, hv = by_hand(torch, a, omega, niter)
    for x, y, what in ((u, hu, "U"), (s, hs, "S"), (v, hv, "V")):
        check(torch.equal(x, y), f"{name}: svd_lowrank's {what} differs from the by-hand run: the sketch is not the one used")
    check(bool(torch.isfinite(u).all()), f"{name}: non-finite U")
    return {
        "name": name,
        "dtype": str(a.dtype).removeprefix("torch."),
        "m": m,
        "n": n,
        "q": q,
        "niter": niter,
        "a": rows(a),
        "omega": rows(omega),
        "u": rows(u),
        "s": [float(x) for x in s],
        "v": rows(v),
    }


def qr_case(torch, name, a):
    q, r = torch.linalg.qr(a)
    d = torch.diagonal(r).abs()
    check(bool((d > 1e-6 * d.max()).all()), f"{name}: rank-deficient, signs of Q would be decided by rounding")
    return {"name": name, "m": a.shape[0], "n": a.shape[1], "a": rows(a), "q": rows(q), "r": rows(r)}


def lu_case(torch, name, a):
    p, l, u = torch.linalg.lu(a)
    check(torch.allclose(p @ l @ u, a, atol=1e-12), f"{name}: P·L·U != A")
    order = [int(i) for i in torch.argmax(p, dim=0)]  # row j of L·U is row order[j] of A (P[order[j], j] = 1)
    return {"name": name, "m": a.shape[0], "n": a.shape[1], "a": rows(a), "rows": order, "l": rows(l), "u": rows(u)}


def main():
    setup("torch")
    import torch

    g = torch.Generator().manual_seed(0)
    qrs = [
        qr_case(torch, "tall 7x4", torch.randn(7, 4, generator=g, dtype=torch.float64)),
        qr_case(torch, "wide 4x7", torch.randn(4, 7, generator=g, dtype=torch.float64)),
        qr_case(torch, "square 5x5 with a negative leading entry", -torch.rand(5, 5, generator=g, dtype=torch.float64)),
    ]
    ties = torch.tensor([[1.0, 2.0, 0.0, 1.0], [-2.0, 1.0, 3.0, 0.0], [2.0, -1.0, 1.0, 2.0], [0.0, 0.0, 2.0, -2.0]])
    lus = [
        lu_case(torch, "tall 9x5", torch.randn(9, 5, generator=g, dtype=torch.float64)),
        lu_case(torch, "wide 5x9", torch.randn(5, 9, generator=g, dtype=torch.float64)),
        lu_case(torch, "square 4x4 with tied pivots", ties.to(torch.float64)),
        lu_case(torch, "singular 5x4 (a zero column)", torch.randn(5, 4, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)),
    ]
    gap = [8.0, 6.0, 5.0, 4.0, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.001]
    lowrank = [
        lowrank_case(torch, "tall f64", spectrum_matrix(torch, 20, 12, gap, torch.float64, 1), 4, 2, 11),
        lowrank_case(torch, "wide f64", spectrum_matrix(torch, 12, 20, gap, torch.float64, 2), 4, 1, 12),
        lowrank_case(torch, "pissa_niter_4-like f32", spectrum_matrix(torch, 32, 24, gap, torch.float32, 3), 4, 4, 13),
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    doc = {"torch": torch.__version__.split("+")[0], "qr": qrs, "svd_lowrank": lowrank, "lu": lus}
    (OUT / "torch.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT / 'torch.json'}")


if __name__ == "__main__":
    run("linalg_fixture", main)
