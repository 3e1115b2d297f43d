"""fastfp as a drop-in for AMPTorch: importing this module changes nothing in AMPTorch.

The descriptor classes here take AMPTorch's parameters and return AMPTorch's data
layout, without AMPTorch installed.
"""

from .descriptors import GMP, GMPOrderNorm

__all__ = ["GMP", "GMPOrderNorm"]
