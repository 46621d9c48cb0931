from .qnet import QTransformerNet, StateEncoder
from .transformer import CausalTransformer

__all__ = ["QTransformerNet", "StateEncoder", "CausalTransformer"]
