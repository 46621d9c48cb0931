from .learner import QTransformerLearner
from .losses import conservative_loss, qtransformer_loss, td_loss
from .targets import last_dim_td_target, per_dimension_td_targets

__all__ = [
    "QTransformerLearner",
    "conservative_loss",
    "qtransformer_loss",
    "td_loss",
    "last_dim_td_target",
    "per_dimension_td_targets",
]
