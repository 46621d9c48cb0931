"""Property-based bad input: every corruption of a valid dataset raises DatasetError naming its field."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qtransformer.data import DatasetError, EpisodeDataset, EpisodeStore


def valid_episodes(lengths, obs_dim=3, d=2):
    eps = []
    for i, T in enumerate(lengths):
        obs = np.linspace(-1, 1, (T + 1) * obs_dim, dtype=np.float32).reshape(T + 1, obs_dim) + i
        eps.append({
            "observations": obs[:-1].copy(), "next_observations": obs[1:].copy(),
            "actions": np.zeros((T, d), np.float32), "rewards": np.zeros(T, np.float32),
            "terminals": np.zeros(T, bool), "timeouts": np.eye(T, dtype=bool)[-1], "source": "autonomous",
        })
    return eps


def corrupt(ep, kind, t, value):
    """Apply one corruption at step t of an episode; return the field the error must name."""
    if kind == "nan":
        field = ["observations", "next_observations", "actions", "rewards"][value % 4]
        arr = ep[field]
        arr[(t,) + (0,) * (arr.ndim - 1)] = [np.nan, np.inf, -np.inf][value % 3]
        return field
    if kind == "action_out_of_bounds":
        ep["actions"][t, value % 2] = 1.0 + 0.01 * (1 + value)
        return "actions"
    if kind == "reward_out_of_range":
        ep["rewards"][t] = [-0.5, 2.0, 1.5][value % 3]
        return "rewards"
    if kind == "no_end_flag":
        ep["timeouts"][-1] = False
        return "terminals'/'timeouts"
    if kind == "early_flag":
        if len(ep["rewards"]) < 2:
            ep["timeouts"][-1] = False  # a one-step episode: make its end missing instead
        else:
            ep[["terminals", "timeouts"][value % 2]][min(t, len(ep["rewards"]) - 2)] = True
        return "terminals'/'timeouts"
    if kind == "short_field":
        field = ["next_observations", "actions", "terminals"][value % 3]
        ep[field] = ep[field][:-1]
        return field
    raise AssertionError(kind)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    which=st.integers(0, 3),
    kind=st.sampled_from(["nan", "action_out_of_bounds", "reward_out_of_range", "no_end_flag", "early_flag", "short_field"]),
    t=st.integers(0, 5),
    value=st.integers(0, 11),
)
def test_every_corruption_is_reported_with_its_field(lengths, which, kind, t, value):
    eps = valid_episodes(lengths)
    ep = eps[which % len(eps)]
    field = corrupt(ep, kind, t % len(ep["rewards"]), value)
    with pytest.raises(DatasetError) as info:
        EpisodeDataset.from_episodes(eps, [-1, -1], [1, 1])
    message = str(info.value)
    assert f"'{field}'" in message and "\n" not in message


def test_nothing_is_written_when_a_check_fails(tmp_path):
    eps = valid_episodes([3, 4])
    good = EpisodeDataset.from_episodes(eps, [-1, -1], [1, 1])
    good.rewards[0] = np.nan  # corrupted after construction: save must still refuse
    with pytest.raises(DatasetError, match="rewards"):
        EpisodeStore.create(tmp_path / "d", good)
    assert not (tmp_path / "d").exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(DatasetError):
        EpisodeStore.open(tmp_path / "d")
