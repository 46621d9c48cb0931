"""Per-dimension action discretizer (actions.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qtransformer.actions import ActionDiscretizer

# dim 0 in [-1, 1], K = 4: width 0.5, bins [-1,-0.5) [-0.5,0) [0,0.5) [0.5,1], centres -0.75 -0.25 0.25 0.75
# dim 1 in [0, 10], K = 4: width 2.5, bins [0,2.5) [2.5,5) [5,7.5) [7.5,10], centres 1.25 3.75 6.25 8.75
LOW, HIGH, K = [-1.0, 0.0], [1.0, 10.0], 4


@pytest.fixture
def disc():
    return ActionDiscretizer(LOW, HIGH, K)


def test_centres_by_hand(disc):
    np.testing.assert_allclose(disc.centres(), [[-0.75, -0.25, 0.25, 0.75], [1.25, 3.75, 6.25, 8.75]], atol=1e-6)
    np.testing.assert_allclose(disc.bin_width, [0.5, 2.5])
    assert disc.action_dim == 2


def test_encode_by_hand(disc):
    actions = np.array([[-1.0, 0.0], [-0.5, 2.5], [0.49, 7.49], [0.99, 9.99], [1.0, 10.0]])
    # left edges belong to their bin; the upper bound falls in the last bin
    assert disc.encode(actions).tolist() == [[0, 0], [1, 1], [2, 2], [3, 3], [3, 3]]
    assert disc.encode(actions).dtype == np.int64


def test_decode_gives_bin_centres_not_left_edges(disc):
    out = disc.decode(np.array([[0, 0], [1, 1], [2, 2], [3, 3]]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[-0.75, 1.25], [-0.25, 3.75], [0.25, 6.25], [0.75, 8.75]], atol=1e-6)


def test_decode_accepts_torch_tensors(disc):
    np.testing.assert_allclose(disc.decode(torch.tensor([[3, 0]])), [[0.75, 1.25]], atol=1e-6)


def test_round_trip_bins_and_centres(disc):
    bins = np.stack(np.meshgrid(np.arange(K), np.arange(K), indexing="ij"), -1).reshape(-1, 2)  # all K^2 pairs
    assert np.array_equal(disc.encode(disc.decode(bins)), bins)
    # any action inside a bin decodes back to that bin's centre, within half a bin width
    rng = np.random.default_rng(0)
    actions = rng.uniform(LOW, HIGH, size=(200, 2))
    recon = disc.decode(disc.encode(actions))
    assert np.all(np.abs(recon - actions) <= disc.bin_width / 2 + 1e-6)
    np.testing.assert_allclose(disc.decode(disc.encode(recon)), recon, atol=1e-6)


def test_out_of_range_actions_clip_to_edge_bins(disc):
    actions = np.array([[-5.0, -100.0], [7.0, 1e6], [-1.0001, 10.0001]])
    assert disc.encode(actions).tolist() == [[0, 0], [3, 3], [0, 3]]


@pytest.mark.parametrize(
    "low, high, k",
    [
        ([0.0, 0.0], [1.0], 4),  # shapes disagree
        ([0.0], [0.0], 4),  # high == low
        ([1.0], [0.0], 4),  # high < low
        ([-np.inf], [1.0], 4),  # unbounded
        ([0.0], [np.nan], 4),  # NaN
        ([0.0], [1.0], 1),  # one bin
    ],
)
def test_bad_bounds_raise(low, high, k):
    with pytest.raises(ValueError):
        ActionDiscretizer(low, high, k)


def test_dict_round_trip(disc):
    again = ActionDiscretizer.from_dict(disc.to_dict())
    np.testing.assert_array_equal(again.low, disc.low)
    np.testing.assert_array_equal(again.high, disc.high)
    assert again.num_bins == K
