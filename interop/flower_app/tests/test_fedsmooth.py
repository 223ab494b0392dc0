"""FedSmoothLoRA's server rule against dense float64 references (numpy's SVD of the formed matrices)."""

import numpy as np
import pytest

from lorakit_flower import fedsmooth as F

rng = np.random.default_rng(1)


def upload(d_out=7, d_in=6, r=2):
    return {"m.lora_A.weight": rng.normal(size=(r, d_in)), "m.lora_B.weight": rng.normal(size=(d_out, r))}


def dense_truncation(m, r):
    u, s, vt = np.linalg.svd(m)
    return (u[:, :r] * s[:r]) @ vt[:r], s


def test_factored_svd_is_the_dense_truncated_svd_of_the_product():
    b, a = rng.normal(size=(9, 5)), rng.normal(size=(5, 8))
    bs, as_, s = F.factored_svd(b, a, 3)
    ref, s_ref = dense_truncation(b @ a, 3)
    np.testing.assert_allclose(bs @ as_, ref, atol=1e-12)
    np.testing.assert_allclose(s, s_ref[:5], rtol=1e-12)
    # the authors' split: B = U sqrt(S), A = sqrt(S) V^T, so B^T B = A A^T = diag(S_r)
    np.testing.assert_allclose(bs.T @ bs, np.diag(s[:3]), atol=1e-12)
    np.testing.assert_allclose(as_ @ as_.T, np.diag(s[:3]), atol=1e-12)


def test_factored_svd_of_a_low_rank_product_pads_with_zeros():
    b, a = rng.normal(size=(6, 1)), rng.normal(size=(1, 4))
    bs, as_, _ = F.factored_svd(b, a, 3)
    assert bs.shape == (6, 3) and as_.shape == (3, 4)
    np.testing.assert_allclose(bs @ as_, b @ a, atol=1e-12)


def test_aggregation_is_the_best_rank_r_approximation_of_the_full_rank_average():
    ups = [(10, upload()), (20, upload()), (70, upload())]
    st = F.FedSmoothState()
    g = st.aggregate(ups)
    full = sum(w / 100 * u["m.lora_B.weight"] @ u["m.lora_A.weight"] for w, u in ups)  # rank 6 > r = 2
    ref, s = dense_truncation(full, 2)
    np.testing.assert_allclose(g["m.lora_B.weight"] @ g["m.lora_A.weight"], ref, atol=1e-12)
    # Eckart-Young: what the projection drops has exactly the trailing singular values' energy
    dropped = full - g["m.lora_B.weight"] @ g["m.lora_A.weight"]
    np.testing.assert_allclose(np.sum(dropped**2), np.sum(s[2:] ** 2), rtol=1e-10)
    assert st.merged == {}  # nothing merged before the first global LoRA exists


def test_each_round_merges_the_previous_global_lora_into_the_stack():
    st = F.FedSmoothState()
    g1 = st.aggregate([(1, upload()), (1, upload())])
    g2 = st.aggregate([(1, upload()), (3, upload())])
    st.aggregate([(2, upload()), (1, upload())])
    mb, ma = st.merged["m.lora_B.weight"], st.merged["m.lora_A.weight"]
    assert mb.shape == (7, 4) and ma.shape == (4, 6)
    backbone_delta = g1["m.lora_B.weight"] @ g1["m.lora_A.weight"] + g2["m.lora_B.weight"] @ g2["m.lora_A.weight"]
    np.testing.assert_allclose(mb @ ma, backbone_delta, atol=1e-12)
    assert st.expected_shapes() == {"m.lora_A.weight": (2, 6), "m.lora_B.weight": (7, 2)}


def test_round_matching_with_zeta_one_returns_exactly_the_dropped_residual():
    ups = [(3, upload()), (5, upload()), (2, upload())]
    g = F.FedSmoothState().aggregate(ups)
    p = np.array([3, 5, 2]) / 10
    bs_as = g["m.lora_B.weight"] @ g["m.lora_A.weight"]
    products = [u["m.lora_B.weight"] @ u["m.lora_A.weight"] for _, u in ups]
    rm = sum(pk * (bc_ac - bs_as) for pk, bc_ac in zip(p, products))  # sum_c p_c W_rm,c (clients' formula)
    np.testing.assert_allclose(rm, sum(pk * x for pk, x in zip(p, products)) - bs_as, atol=1e-12)
    assert np.linalg.norm(rm) > 1e-3  # the projection did drop something


def test_zeta_schedules():
    assert F.zeta(3, 10, "constant", 1.0, 0.0) == 1.0
    assert F.zeta(1, 10, "decay", 1.0, 0.5) == pytest.approx(1.0)  # t = 0: zeta0
    assert F.zeta(6, 10, "decay", 1.0, 0.5) == pytest.approx(0.75)  # t = T/2: the midpoint
    assert F.zeta(11, 10, "decay", 1.0, 0.5) == pytest.approx(0.5)  # t = T: zeta_min
    with pytest.raises(ValueError, match="constant or decay"):
        F.zeta(1, 3, "linear", 1.0, 0.0)
