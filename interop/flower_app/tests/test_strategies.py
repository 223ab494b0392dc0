"""Each aggregation rule against an independent float64 reference (loops over scalars, finite differences)."""

import numpy as np
import pytest

from lorakit_flower import strategies as S

rng = np.random.default_rng(0)


def client(d_out=6, d_in=5, r=2, scale=1.0, a=None):
    return {
        "m.lora_A": a if a is not None else rng.normal(size=(r, d_in)) * scale,
        "m.lora_B": rng.normal(size=(d_out, r)) * scale,
        "n.lora_A": rng.normal(size=(r, 3)),
        "n.lora_B": rng.normal(size=(4, r)),
    }


def test_fedavg_equals_a_scalar_loop_reference():
    ups = [(10, client()), (30, client()), (60, client())]
    got = S.fedavg(ups)
    for k in ups[0][1]:
        ref = np.zeros_like(ups[0][1][k])
        for idx in np.ndindex(ref.shape):
            ref[idx] = (10 * ups[0][1][k][idx] + 30 * ups[1][1][k][idx] + 60 * ups[2][1][k][idx]) / 100
        np.testing.assert_allclose(got[k], ref, rtol=0, atol=1e-14)


def test_fedavg_bias_is_the_gap_between_ideal_and_averaged_factors():
    ups = [(1, client()), (2, client()), (5, client())]
    avg = S.fedavg(ups)
    bias = S.fedavg_bias(ups)
    for m in ("m", "n"):
        ideal = S.ideal_delta(ups, m)
        np.testing.assert_allclose(ideal - avg[f"{m}.lora_B"] @ avg[f"{m}.lora_A"], bias[m], atol=1e-12)
        assert np.linalg.norm(bias[m]) > 1e-3  # distinct factors: fedavg is biased


def test_two_equal_clients_bias_is_a_quarter_of_the_factor_differences():
    c1, c2 = client(), client()
    bias = S.fedavg_bias([(1, c1), (1, c2)])["m"]
    np.testing.assert_allclose(bias, 0.25 * (c1["m.lora_B"] - c2["m.lora_B"]) @ (c1["m.lora_A"] - c2["m.lora_A"]), atol=1e-13)


def test_ffa_shared_a_makes_averaging_exact():
    a = rng.normal(size=(2, 5))
    ups = [(3, client(a=a)), (4, client(a=a)), (9, client(a=a))]
    only_b = [(w, {"m.lora_B": u["m.lora_B"]}) for w, u in ups]
    b = S.aggregate("ffa", only_b)["m.lora_B"]
    np.testing.assert_allclose(b @ a, S.ideal_delta(ups, "m"), atol=1e-12)
    np.testing.assert_allclose(S.fedavg_bias(ups)["m"], 0, atol=1e-12)


def test_fair_gradient_matches_central_differences():
    b, a = rng.normal(size=(6, 2)), rng.normal(size=(2, 5))
    t = rng.normal(size=(6, 5))
    db = rng.normal(size=(6, 2)) * 0.1
    g = S.fair_gradient(db, b, a, t, 0.05)
    eps = 1e-6
    fd = np.zeros_like(db)
    for idx in np.ndindex(db.shape):
        e = np.zeros_like(db)
        e[idx] = eps
        fd[idx] = (S.fair_objective(db + e, b, a, t, 0.05) - S.fair_objective(db - e, b, a, t, 0.05)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


def test_factored_fair_objective_and_gradient_equal_the_dense_ones():
    ups = [(1, client()), (2, client()), (4, client())]
    p = S.weights(ups)
    avg = S.fedavg(ups)
    a, b = avg["m.lora_A"], avg["m.lora_B"]
    t = S.ideal_delta(ups, "m")
    fm = S.FairModule(b, a, [(u["m.lora_B"], u["m.lora_A"]) for _, u in ups], p)
    np.testing.assert_allclose(fm.tnorm, np.linalg.norm(t), rtol=1e-12)
    for db in (np.zeros_like(b), rng.normal(size=b.shape) * 0.3):
        np.testing.assert_allclose(fm.objective(db, 0.02), S.fair_objective(db, b, a, t, 0.02), rtol=1e-12)
        np.testing.assert_allclose(fm.gradient(db, 0.02), S.fair_gradient(db, b, a, t, 0.02), rtol=1e-10, atol=1e-13)


def test_fair_raises_the_cosine_to_the_ideal_and_nears_a_stationary_point():
    ups = [(1, client()), (1, client()), (2, client())]
    avg = S.fedavg(ups)
    out = S.fair(ups, lam=0.01, steps=3000, lr=0.01)
    a, b0, b1 = avg["m.lora_A"], avg["m.lora_B"], out["m.lora_B"]
    t = S.ideal_delta(ups, "m")
    cos = lambda p: np.sum(p * t) / np.linalg.norm(p) / np.linalg.norm(t)
    assert cos(b1 @ a) > cos(b0 @ a) + 1e-3
    np.testing.assert_array_equal(out["m.lora_A"], a)  # A is the plain average
    g = S.fair_gradient(b1 - b0, b0, a, t, 0.01)
    assert np.linalg.norm(g) < 0.05 * np.linalg.norm(S.fair_gradient(np.zeros_like(b0), b0, a, t, 0.01))


def test_fair_with_a_huge_lambda_stays_at_the_average():
    ups = [(1, client()), (3, client())]
    out = S.fair(ups, lam=1e6, steps=200, lr=0.01)
    np.testing.assert_allclose(out["m.lora_B"], S.fedavg(ups)["m.lora_B"], atol=1e-6)


def test_check_update_names_shape_nan_and_norm_problems():
    good = {"m.lora_A": np.ones((2, 5)), "m.lora_B": np.zeros((6, 2))}
    shapes = {k: v.shape for k, v in good.items()}
    assert S.check_update(good, shapes, 100.0) is None
    assert "shape (5, 2)" in S.check_update({**good, "m.lora_A": np.ones((5, 2))}, shapes, 100.0)
    assert "NaN or Inf" in S.check_update({**good, "m.lora_B": np.full((6, 2), np.nan)}, shapes, 100.0)
    assert "Frobenius norm" in S.check_update({**good, "m.lora_A": np.full((2, 5), 1e3)}, shapes, 100.0)
    assert "missing" in S.check_update({"m.lora_A": good["m.lora_A"]}, shapes, 100.0)


def test_unknown_strategy_is_named():
    with pytest.raises(ValueError, match="unknown strategy"):
        S.aggregate("fedprox", [(1, client())])


def test_pairs_accept_peft_weight_names():
    names = ["x.lora_A.weight", "x.lora_B.weight", "y.lora_A", "y.lora_B", "z.lora_A.weight"]
    assert S.lora_pairs(names) == [
        ("x", "x.lora_A.weight", "x.lora_B.weight"),
        ("y", "y.lora_A", "y.lora_B"),
    ]
    ups = [(1, {"x.lora_A.weight": rng.normal(size=(2, 3)), "x.lora_B.weight": rng.normal(size=(4, 2))}) for _ in range(2)]
    out = S.fair(ups, steps=50)
    assert not np.allclose(out["x.lora_B.weight"], S.fedavg(ups)["x.lora_B.weight"])  # the residual was applied
