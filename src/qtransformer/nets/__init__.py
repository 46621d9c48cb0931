from .qnet import QTransformerNet, StateEncoder, check_model_size, parameter_count
from .transformer import CausalTransformer

__all__ = ["QTransformerNet", "StateEncoder", "CausalTransformer", "check_model_size", "parameter_count"]
