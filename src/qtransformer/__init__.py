"""qtransformer: Q-Transformer (Chebotar, Vuong et al., CoRL 2023) for offline robot learning."""

__version__ = "0.1.0"

from . import envs  # noqa: F401 - registers qtransformer/PointReach3D-v0 with gymnasium
from .actions import ActionDiscretizer
from .config import AlgoConfig, ModelConfig, TrainConfig
from .policy import QTPolicy

__all__ = ["ActionDiscretizer", "AlgoConfig", "ModelConfig", "TrainConfig", "QTPolicy", "__version__"]
