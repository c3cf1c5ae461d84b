"""Small examples worked by hand from the definitions (docs/design.md and the papers)."""
import math

import torch

from robustagg import ops


def test_sign_vote_counts_signs_and_abstains_on_zeros():
    u = torch.tensor([[1.0, -2.0, 0.0], [3.0, 0.0, -0.0], [-1.0, -1.0, 5.0]])
    assert ops.sign_vote(u).tolist() == [1, -2, 1]
    # weighted: column 0: 1 + 2 - 3 = 0; column 1: -1 + 0 - 3 = -4; column 2: 0 + 0 + 3 = 3
    w = torch.tensor([1.0, 2.0, 3.0])
    assert ops.sign_vote(u, w).tolist() == [0.0, -4.0, 3.0]


def test_sign_vote_treats_nan_as_abstention():
    u = torch.tensor([[float("nan")], [1.0], [1.0]])
    assert ops.sign_vote(u).tolist() == [2]


def test_robust_lr_mean_negates_exactly_the_weak_coordinates():
    u = torch.tensor([[1.0, 1.0, 2.0], [1.0, -1.0, -2.0], [1.0, 3.0, 3.0]])
    # votes: 3, 1, 1 -> with theta = 2 only column 0 passes; means 1, 1, 1
    assert ops.robust_lr_mean(u, 2).tolist() == [1.0, -1.0, -1.0]
    assert ops.robust_lr_mean(u, 1).tolist() == [1.0, 1.0, 1.0]
    assert ops.robust_lr_mean(u, 0).tolist() == [1.0, 1.0, 1.0]
    # weighted mean with weights 1, 1, 2: (1 + 1 + 2) / 4 = 1, (1 - 1 + 6) / 4 = 1.5
    w = torch.tensor([1.0, 1.0, 2.0])
    assert ops.robust_lr_mean(u[:, :2], 2, w).tolist() == [1.0, -1.5]


def test_trimmed_mean_drops_each_tail():
    u = torch.tensor([[1.0], [2.0], [100.0], [3.0], [-50.0]])
    assert ops.trimmed_mean(u, 1).tolist() == [2.0]
    assert ops.trimmed_mean(u, 2).tolist() == [2.0]
    assert ops.trimmed_mean(u.double(), 0).tolist() == [56.0 / 5.0]


def test_trimmed_mean_trims_nan_in_the_upper_tail():
    u = torch.tensor([[1.0], [2.0], [float("nan")], [3.0], [-50.0]])
    assert ops.trimmed_mean(u, 1).tolist() == [2.0]  # NaN sorts above +inf, -50 is the low tail


def test_median_is_the_midpoint_for_even_k():
    assert ops.median(torch.tensor([[1.0], [4.0], [2.0], [10.0]])).tolist() == [3.0]
    assert ops.median(torch.tensor([[1.0], [4.0], [2.0]])).tolist() == [2.0]
    big = torch.tensor([[3e38], [3e38]], dtype=torch.float32)
    assert ops.median(big).tolist() == [float(torch.tensor(3e38, dtype=torch.float32))]  # no overflow


def test_masked_trimmed_mean_zeroes_inconsistent_coordinates():
    u = torch.tensor([[1.0, 1.0, 4.0], [2.0, -1.0, 5.0], [3.0, 1.0, -6.0]], dtype=torch.float64)
    # consistency |sum sgn| / K: 1, 1/3, 1/3
    assert ops.masked_trimmed_mean(u, 1.0, 0).tolist() == [2.0, 0.0, 0.0]
    assert ops.masked_trimmed_mean(u, 1 / 3, 0).tolist() == [2.0, 1.0 / 3.0, 1.0]
    assert ops.masked_trimmed_mean(u, 1 / 3, 1).tolist() == [2.0, 1.0, 4.0]


def test_closest_to_median_mean_by_hand():
    # Columns sorted: 0 1 2 3 10 (median 2) | -9 -1 0 1 2 (0) | 0 1 2 3 4 (2) | 0 4 5 6 10 (5).
    # keep 3 (trim 1): the windows [1 2 3], [-1 0 1], [1 2 3], [4 5 6]; keep 1 (trim 2): the medians.
    u = torch.tensor([[0.0, 2.0, 4.0, 10.0], [10.0, -9.0, 3.0, 0.0], [2.0, 1.0, 0.0, 6.0],
                      [3.0, 0.0, 2.0, 4.0], [1.0, -1.0, 1.0, 5.0]], dtype=torch.float64)
    assert ops.closest_to_median_mean(u, 1).tolist() == [2.0, 0.0, 2.0, 5.0]
    assert ops.closest_to_median_mean(u, 2).tolist() == [2.0, 0.0, 2.0, 5.0]
    assert ops.closest_to_median_mean(u, 0).tolist() == u.mean(0).tolist()
    # Even K: sorted 0 2 4 6 (median 3) keeps [2 4]; sorted 0 8 9 100 (median 8.5) keeps [8 9].
    v = torch.tensor([[0.0, 0.0], [2.0, 8.0], [4.0, 9.0], [6.0, 100.0]], dtype=torch.float64)
    assert ops.closest_to_median_mean(v, 1).tolist() == [3.0, 8.5]
    # Not the trimmed mean: sorted 0 0 0 1 50 (median 0) keeps [0 0 0]; the trimmed mean keeps [0 0 1].
    w = torch.tensor([[0.0], [0.0], [0.0], [1.0], [50.0]], dtype=torch.float64)
    assert ops.closest_to_median_mean(w, 1).tolist() == [0.0]
    assert ops.trimmed_mean(w, 1).tolist() == [1.0 / 3.0]
    # A tie in distance keeps the lower value: sorted 1 2 4 7 8 (median 4): 1 and 7 are both 3 away,
    # so the window stays at [1 2 4] rather than [2 4 7].
    e = torch.tensor([[7.0], [2.0], [8.0], [1.0], [4.0]], dtype=torch.float64)
    assert ops.closest_to_median_mean(e, 1).tolist() == [7.0 / 3.0]
    # NaN sorts last and is farther than any number: sorted 0 1 2 nan nan (median 2) keeps [0 1 2];
    # 0 1 2 3 nan keeps [1 2 3]; 0 nan nan nan nan has one number for a window of 3: NaN.
    nan = float("nan")
    n = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, nan], [2.0, 2.0, nan], [nan, 3.0, nan], [nan, nan, nan]],
                     dtype=torch.float64)
    out = ops.closest_to_median_mean(n, 1)
    assert out[:2].tolist() == [1.0, 2.0] and math.isnan(out[2])


def test_repeated_median_line_by_hand():
    # sorted values 0, 1, 2, 30 at ranks 0..3
    # slopes: rank 0 -> 1, 1, 10 (med 1); rank 1 -> 1, 1, 14.5 (1); rank 2 -> 1, 1, 28 (1);
    #         rank 3 -> 10, 14.5, 28 (14.5); median of 1, 1, 1, 14.5 = 1
    # intercepts: ranks 0-2 -> median 0; rank 3 -> 0, -13.5, -54 (-13.5); median of 0, 0, 0, -13.5 = 0
    u = torch.tensor([[0.0], [2.0], [1.0], [30.0]], dtype=torch.float64)
    slope, intercept = ops.repeated_median_line(u)
    assert slope.tolist() == [1.0] and intercept.tolist() == [0.0]
    # authors' intercept: med(y) - slope (K-1)/2 = 1.5 - 1.5 = 0
    slope, intercept = ops.repeated_median_line(u, intercept="median")
    assert slope.tolist() == [1.0] and intercept.tolist() == [0.0]


def test_repeated_median_line_one_and_two_clients():
    slope, icpt = ops.repeated_median_line(torch.tensor([[5.0, -1.0]]))
    assert slope.tolist() == [0.0, 0.0] and icpt.tolist() == [5.0, -1.0]
    slope, icpt = ops.repeated_median_line(torch.tensor([[3.0], [1.0]]))
    assert slope.tolist() == [2.0] and icpt.tolist() == [1.0]


def test_residual_reweight_five_clients_by_hand():
    # Column A, clients 0..4 = 3, 100, 0, 2, 1: sorted 0, 1, 2, 3, 100.
    #   slopes per rank: med(1,1,1,25)=1, med(1,1,1,33)=1, 1, 1, med(25,33,49,97)=41 -> slope 1
    #   intercepts per rank: 0, 0, 0, 0, med(0,-32,-96,-288)=-64 -> intercept 0; line y = x
    #   residuals 0, 0, 0, 0, 96 -> med|r| = 0 -> tau = 0: zero residuals keep w = 1, the
    #   outlier gets w = 0 and is replaced by the line value 4 (eq. 9).
    #   confidences by rank 1, 1, 1, 1, 0: std = sqrt(0.2)
    # Column B, clients 0..4 = 10, 0, 2, 3, 4: sorted 0, 2, 3, 4, 10.
    #   slope medians per rank 1.75, 1.5, 1.25, 7/6, 37/12 -> slope 1.5
    #   intercept medians per rank 0, 0.5, 0.5, 0.5, -7/3 -> intercept 0.5
    #   residuals -0.5, 0, -0.5, -1, 3.5 -> med|r| = 0.5; tau = 1.4826 * 2.25 * 0.5
    #   leverage h = 1/5 + (x-2)^2/10 -> sqrt(1-h) at rank 4 = sqrt(0.4); Z = 2 sqrt(2/5)
    #   only rank 4 leaves the band: w = Z / |e / sqrt(1-h)|; all others 1
    tau_b = 1.4826 * 2.25 * 0.5
    Z = 2 * math.sqrt(2 / 5)
    w4 = Z / ((3.5 / tau_b) / math.sqrt(0.4))
    assert abs(w4 - 0.8 * tau_b / 3.5) < 1e-12 and abs(w4 - 0.38124) < 1e-9 and w4 > 0.1  # kept: no correction in column B
    conf_b = [1, 1, 1, 1, w4]
    mean_b = sum(conf_b) / 5
    sigma_b = math.sqrt(sum((c - mean_b) ** 2 for c in conf_b) / 4)
    sigma_a = math.sqrt(0.2)
    # client sums (eq. 10): client 1 is rank 4 in A; client 0 is rank 4 in B
    W = [sigma_a + w4 * sigma_b, sigma_b, sigma_a + sigma_b, sigma_a + sigma_b, sigma_a + sigma_b]
    cw = [x / sum(W) for x in W]
    agg_a = cw[0] * 3 + cw[1] * 4 + cw[2] * 0 + cw[3] * 2 + cw[4] * 1  # 100 corrected to 4
    agg_b = cw[0] * 10 + cw[1] * 0 + cw[2] * 2 + cw[3] * 3 + cw[4] * 4
    assert abs(cw[0] - 0.184162) < 1e-6 and abs(cw[2] - 0.241212) < 1e-6

    u = torch.tensor([[3.0, 10.0], [100.0, 0.0], [0.0, 2.0], [2.0, 3.0], [1.0, 4.0]], dtype=torch.float64)
    got_w, got_agg = ops.residual_reweight(u, lam=2.0, delta=0.1)
    torch.testing.assert_close(got_w, torch.tensor(cw, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(got_agg, torch.tensor([agg_a, agg_b], dtype=torch.float64), rtol=1e-12, atol=0)
    # power 2 (the authors' code) squares the client sums before normalising
    got_w2, _ = ops.residual_reweight(u, power=2.0)
    W2 = [x * x for x in W]
    torch.testing.assert_close(got_w2, torch.tensor([x / sum(W2) for x in W2], dtype=torch.float64), rtol=1e-12, atol=0)


def test_residual_reweight_degenerate_cases():
    w, agg = ops.residual_reweight(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
    assert w.tolist() == [0.5, 0.5] and agg.tolist() == [2.0, 4.0]
    same = torch.ones(4, 3)  # every coordinate's confidences equal -> uniform weights
    w, agg = ops.residual_reweight(same)
    assert w.tolist() == [0.25] * 4 and agg.tolist() == [1.0] * 3


def test_pairwise_tables():
    u = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 4.0]])
    assert ops.pairwise_sq_distances(u).tolist() == [[0.0, 25.0, 25.0], [25.0, 0.0, 0.0], [25.0, 0.0, 0.0]]
    c = ops.cosine_similarity(torch.tensor([[1.0, 0.0], [1.0, 1.0], [-2.0, 0.0], [0.0, 0.0]]))
    r = 1 / math.sqrt(2)
    expected = torch.tensor([[1, r, -1, 0], [r, 1, -r, 0], [-1, -r, 1, 0], [0, 0, 0, 0]], dtype=torch.float32)
    torch.testing.assert_close(c, expected)
