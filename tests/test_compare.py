"""`elmo_runtime.compare`: the one measure shared by the parity gate, the conformance writer and
`elmo-verify`."""

import numpy as np
import pytest

from elmo_runtime.compare import Tolerance, compare, cosines


def test_a_zero_vector_against_a_non_zero_one_scores_0():
    assert cosines(np.zeros(3), np.array([0.0, 1.0, 0.0])) == 0.0
    assert cosines(np.array([0.0, 1.0, 0.0]), np.zeros(3)) == 0.0


def test_two_zero_vectors_score_1():
    assert cosines(np.zeros(4, np.float32), np.zeros(4, np.float32)) == 1.0


def test_cosines_of_ordinary_vectors():
    got = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0], [-1.0, 0.0]])
    want = np.array([[1.0, 0.0], [1.0, 0.0], [5.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(cosines(got, want), [1.0, 1 / np.sqrt(2), 1.0, -1.0], rtol=0, atol=1e-15)


def test_compare_per_layer_with_a_zeroed_token():
    rng = np.random.default_rng(0)
    want = rng.standard_normal((3, 5, 8)).astype(np.float32)  # (layers, tokens, dim)
    got = want.copy()
    got[1, 2] = 0.0  # layer 1 drops token 2
    figures = compare(got, want)
    assert figures.min_cosine[1] == 0.0  # exactly: not a rounding of a small cosine
    np.testing.assert_allclose(figures.min_cosine, [1.0, 0.0, 1.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(figures.mean_cosine, [1.0, 0.8, 1.0], rtol=0, atol=1e-12)
    assert figures.max_abs[0] == 0.0 and figures.max_abs[2] == 0.0
    assert figures.max_abs[1] == np.abs(want[1, 2]).max()


def test_compare_takes_cosines_over_real_tokens_and_max_abs_over_everything():
    want = np.ones((2, 2, 3, 4), np.float32)  # (layers, batch, time, dim)
    real = np.array([[True, True, False], [True, False, False]])
    want[:, ~real] = 0.0
    got = want.copy()
    got[:, 1, 2] = 0.5  # padding that is not zero: no token's cosine, but a max abs error
    figures = compare(got, want, real)
    np.testing.assert_array_equal(figures.mean_cosine, [1.0, 1.0])
    np.testing.assert_array_equal(figures.max_abs, [0.5, 0.5])


def test_compare_with_no_token_and_with_nan():
    empty = np.zeros((3, 0, 4), np.float32)
    figures = compare(empty, empty)
    assert list(figures.max_abs) == [0, 0, 0] and list(figures.min_cosine) == [1, 1, 1]
    got = np.ones((2, 2, 4), np.float32)
    got[1, 0, 0] = np.nan
    figures = compare(got, np.ones((2, 2, 4), np.float32))
    assert figures.max_abs[0] == 0.0 and np.isnan(figures.max_abs[1]) and np.isnan(figures.mean_cosine[1])


@pytest.mark.parametrize(
    ("tolerance", "figures", "expected"),
    [
        (Tolerance(max_abs=1e-4), (0.01, 1.0, 1.0), ["max abs difference 0.01 > 0.0001"]),
        (Tolerance(max_abs=1e-4), (1e-5, 0.5, 0.1), []),
        (Tolerance(mean_cosine=0.99), (5.0, 0.95, 0.0), ["mean cosine 0.950000 < 0.99"]),
        (
            Tolerance(min_cosine=0.999, mean_cosine=0.99),
            (5.0, 0.95, 0.0),
            ["min cosine 0.000000 < 0.999", "mean cosine 0.950000 < 0.99"],
        ),
        (Tolerance(mean_cosine=0.99), (float("nan"), 1.0, 1.0), ["non-finite values"]),
        (Tolerance(max_abs=1.0), (0.5, None, float("nan")), ["non-finite values"]),
    ],
)
def test_tolerance_violations(tolerance, figures, expected):
    assert tolerance.violations(*figures) == expected
