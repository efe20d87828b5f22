"""Safetensors files tagged with a format string in their metadata (profiles, recordings), so
that loading the wrong kind of file is a clear error rather than a KeyError later."""
from __future__ import annotations

from typing import Dict, Tuple

import torch


def read_tagged(path: str, fmt: str, what: str) -> Tuple[Dict[str, str], Dict[str, torch.Tensor]]:
    """(metadata, tensors) of ``path``; ValueError naming ``what`` when its format is not ``fmt``."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != fmt:
            raise ValueError(f"{path} is not a comfyui-stas {what} (format {meta.get('format')!r}).")
        return meta, {k: f.get_tensor(k) for k in f.keys()}
