from .dataset import DatasetError, EpisodeDataset
from .returns import n_step_returns, returns_to_go
from .sampler import TransitionSampler, build_transitions

__all__ = ["DatasetError", "EpisodeDataset", "n_step_returns", "returns_to_go", "TransitionSampler", "build_transitions"]
