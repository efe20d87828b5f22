"""Real-ComfyUI test environment: finds a ComfyUI checkout, imports it on the CPU, loads
this pack the way ComfyUI loads custom nodes, and builds tiny random-weight video DiTs from
ComfyUI's own classes, loaded through ComfyUI's own loader.

Found via COMFYUI_PATH; tests that need it skip (saying why) when it is missing.
"""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

PACK_DIR = Path(__file__).resolve().parents[1]
_loaded = {}


def comfyui_path() -> Path | None:
    p = os.environ.get("COMFYUI_PATH")
    if p and (Path(p) / "comfy" / "model_patcher.py").exists():
        return Path(p)
    return None


def require_comfy():
    """Import ComfyUI (CPU) and this pack; return the pack module. Skips when unavailable."""
    if "pack" in _loaded:
        return _loaded["pack"]
    root = comfyui_path()
    if root is None:
        pytest.skip("real ComfyUI not found: set COMFYUI_PATH to a ComfyUI checkout (see README, 'Tests')")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from comfy.cli_args import args
    args.cpu = True
    import comfy.model_management  # noqa: F401  (after args.cpu)
    import nodes as comfy_nodes
    ok = asyncio.run(comfy_nodes.load_custom_node(str(PACK_DIR)))
    assert ok is not False, "ComfyUI failed to load the pack"
    mod_name = str(PACK_DIR).replace(".", "_x_")
    pack = sys.modules[mod_name]
    _loaded["pack"] = pack
    return pack


def comfy_version() -> str:
    import comfyui_version
    return comfyui_version.__version__


# -- tiny models, built from ComfyUI's own classes and loaded through its own loader ----

def tiny_state_dict(module, scale: float = 0.02, seed: int = 0):
    import torch
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g, dtype=torch.float32) * scale for k, v in module.state_dict().items()}


def load_tiny(module, seed: int = 0, **kw):
    """Random weights for ``module`` loaded with comfy.sd.load_diffusion_model_state_dict."""
    import comfy.sd
    mp = comfy.sd.load_diffusion_model_state_dict(tiny_state_dict(module, seed=seed), **kw)
    assert mp is not None, f"ComfyUI did not recognise the tiny {type(module).__name__}"
    return mp


def tiny_wan(num_layers: int = 4, dim: int = 128, **kw):
    import comfy.ldm.wan.model as wm
    import comfy.ops
    m = wm.WanModel(dim=dim, ffn_dim=2 * dim, num_heads=2, num_layers=num_layers, text_dim=4096,
                    in_dim=kw.pop("in_dim", 16), out_dim=kw.pop("out_dim", 16), freq_dim=256,
                    operations=comfy.ops.manual_cast, **kw)
    return load_tiny(m)


def text_cond(batch: int = 1, tokens: int = 8, seed: int = 1, dim: int = 4096, **extra):
    import torch
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, dim, generator=g), dict(extra)]]


def sample(model, latent, steps: int = 4, cfg: float = 2.0, seed: int = 0, positive=None, negative=None,
           sampler: str = "euler", scheduler: str = "simple", **kw):
    import comfy.sample
    import torch
    noise = comfy.sample.prepare_noise(latent, seed)
    positive = positive if positive is not None else text_cond(seed=1)
    negative = negative if negative is not None else text_cond(seed=2)
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, latent,
                                   disable_pbar=True, seed=seed, **kw)


def pack_module(name: str):
    """A module of this pack as ComfyUI loaded it, e.g. pack_module('nodes.patching')."""
    pack = require_comfy()
    import importlib
    return importlib.import_module(f"{pack.__name__}.{name}")
