"""qnas-hw: hardware-aware architecture search for hybrid quantum-classical neural networks."""

from qnas_hw.model.space import Architecture, SearchSpace, SpaceError

__all__ = ["Architecture", "SearchSpace", "SpaceError"]
__version__ = "0.1.0"
