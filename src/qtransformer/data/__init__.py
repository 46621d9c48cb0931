from .batch import Batch
from .dataset import DatasetError, EpisodeDataset
from .returns import n_step_returns, returns_to_go
from .sampler import TransitionSampler, build_transitions
from .store import EpisodeStore, append_episodes, compact_dataset

__all__ = [
    "Batch",
    "DatasetError",
    "EpisodeDataset",
    "EpisodeStore",
    "append_episodes",
    "compact_dataset",
    "n_step_returns",
    "returns_to_go",
    "TransitionSampler",
    "build_transitions",
]
