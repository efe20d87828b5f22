"""Pure-torch core of comfyui-stas: no ComfyUI import anywhere below this package.

Token layout, steering masks, MA channel detection, the steering op, the sigma window,
statistics and plotting live here so that they can be unit-tested without ComfyUI and
reused by any host (ComfyUI nodes, a benchmark, a notebook).
"""
from .layout import BoundarySpec, Grid, TokenClass, steer_token_indices, token_classes
from .blocks import parse_blocks
from .channels import ChannelSelection, parse_channels, detect_ma_channels
from .steer import steer_
from .schedule import SigmaWindow

__all__ = [
    "BoundarySpec", "Grid", "TokenClass", "steer_token_indices", "token_classes",
    "parse_blocks", "ChannelSelection", "parse_channels", "detect_ma_channels",
    "steer_", "SigmaWindow",
]
