"""qnas-hw: hardware-aware architecture search for hybrid quantum-classical neural networks."""

from typing import Any

from qnas_hw.model.space import Architecture, SearchSpace, SpaceError

__all__ = ["Architecture", "SearchSpace", "SpaceError", "load_export"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``qnas_hw.load_export`` imported on first use: it needs torch and qiskit, which ``import qnas_hw`` must not
    load (the CLI's ``--help`` and ``--version`` import the package)."""
    if name == "load_export":
        from qnas_hw.deploy.runtime import load_export

        return load_export
    raise AttributeError(f"module 'qnas_hw' has no attribute {name!r}")
