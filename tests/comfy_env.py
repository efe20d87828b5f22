"""Real-ComfyUI test environment: finds a ComfyUI checkout, imports it on the CPU, loads
this pack the way ComfyUI loads custom nodes, and builds tiny random-weight video DiTs from
ComfyUI's own classes, loaded through ComfyUI's own loader.

Found via COMFYUI_PATH; tests that need it skip (saying why) when it is missing.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
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
        from server_env import skip_missing
        skip_missing("real ComfyUI not found: set COMFYUI_PATH to a ComfyUI checkout (see README, 'Tests')")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from comfy.cli_args import args
    args.cpu = True
    import torch
    # Tiny models: one thread is ~15x faster than fighting other processes for 2 busy cores.
    torch.set_num_threads(1)
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


# -- more tiny models: every family and variant STAS supports (helper A2) ----------------
# Each is built from ComfyUI's own module class only to get a state dict of the right keys
# and shapes; ComfyUI's own detection (model_detection / supported_models) then picks the
# model_base class, exactly as for a real checkpoint.

def dataclass_kwargs(dc, given):
    """Constructor kwargs for a ComfyUI params dataclass whose fields vary between versions:
    the fields of ``given`` it has, plus a neutral value (None / False / []) for every other
    required field."""
    import dataclasses
    names = {f.name for f in dataclasses.fields(dc)}
    out = {k: v for k, v in given.items() if k in names}
    for f in dataclasses.fields(dc):
        if f.name in out or f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        t = str(f.type)
        out[f.name] = False if "bool" in t else ([] if "list" in t else None)
    return out


def tiny_wan_module(cls_name: str = "WanModel", num_layers: int = 4, dim: int = 128, **kw):
    """A tiny ``comfy.ldm.wan.model.<cls_name>`` (WanModel, VaceWanModel, CameraWanModel)."""
    import comfy.ldm.wan.model as wm
    import comfy.ops
    cls = getattr(wm, cls_name)
    kw.setdefault("in_dim", 16)
    kw.setdefault("out_dim", 16)
    return cls(dim=dim, ffn_dim=2 * dim, num_heads=2, num_layers=num_layers, text_dim=4096, freq_dim=256,
               operations=comfy.ops.manual_cast, **kw)


def tiny_wan_variant(variant: str, seed: int = 0, num_layers: int = 4):
    """Tiny random-weight Wan of one variant, loaded through ComfyUI's loader.

    t2v (Wan 2.1 T2V, also one A14B expert), i2v, flf (first-last-frame: img_emb.emb_pos),
    vace, camera, fun_ref (Fun 1.1 control: in_dim 48 + ref_conv), ti2v_5b (Wan 2.2 5B:
    48-channel latent).
    """
    specs = {
        "t2v": ("WanModel", {}),
        "i2v": ("WanModel", dict(model_type="i2v", in_dim=36)),
        "flf": ("WanModel", dict(model_type="i2v", in_dim=36, flf_pos_embed_token_number=514)),
        "vace": ("VaceWanModel", dict(vace_layers=2, vace_in_dim=96)),
        "camera": ("CameraWanModel", dict(model_type="camera", in_dim=32)),
        "fun_ref": ("WanModel", dict(model_type="i2v", in_dim=48, in_dim_ref_conv=16)),
        "ti2v_5b": ("WanModel", dict(in_dim=48, out_dim=48)),
    }
    cls_name, kw = specs[variant]
    return load_tiny(tiny_wan_module(cls_name, num_layers=num_layers, **kw), seed=seed)


def tiny_hunyuan_video(depth: int = 2, depth_single: int = 2, seed: int = 0):
    """Tiny HunyuanVideo (T2V layout: 16-ch latent, llama text 4096, clip pooled 768, guidance)."""
    import comfy.ldm.hunyuan_video.model as hm
    import comfy.ops
    params = dataclass_kwargs(hm.HunyuanVideoParams, dict(
        in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096, hidden_size=128,
        mlp_ratio=4.0, num_heads=1, depth=depth, depth_single_blocks=depth_single, axes_dim=[16, 56, 56],
        theta=256, patch_size=[1, 2, 2], qkv_bias=True, guidance_embed=True, byt5=False, meanflow=False))
    m = hm.HunyuanVideo(image_model="hunyuan_video", operations=comfy.ops.manual_cast, **params)
    return load_tiny(m, seed=seed)


def has_hunyuan_video15() -> bool:
    """HunyuanVideo 1.5 (vision_in / cond_type_embedding in ComfyUI's HunyuanVideo class) came after 0.3.64."""
    import dataclasses
    import comfy.ldm.hunyuan_video.model as hm
    return "vision_in_dim" in {f.name for f in dataclasses.fields(hm.HunyuanVideoParams)}


def tiny_hunyuan_video15(depth: int = 2, depth_single: int = 0, seed: int = 0, meanflow: bool = False,
                         in_channels: int = 65):
    """Tiny HunyuanVideo 1.5 (its real layout but hidden 128: 32-ch latent + 32-ch image concat + mask = 65
    input channels, patch 1, Qwen2.5-VL text 3584, byT5 1472, SigLIP vision 1152, condition-type embedding,
    no CLIP pooled input, no guidance embedding; the real model has 54 double- and no single-stream block).
    T2V and I2V checkpoints have the same layout; ComfyUI loads both as model_base.HunyuanVideo15.
    ``in_channels=98`` (+ meanflow): the super-resolution model, model_base.HunyuanVideo15_SR_Distilled."""
    import comfy.ldm.hunyuan_video.model as hm
    import comfy.ops
    params = dataclass_kwargs(hm.HunyuanVideoParams, dict(
        in_channels=in_channels, out_channels=32, vec_in_dim=None, context_in_dim=3584, hidden_size=128,
        mlp_ratio=4.0, num_heads=1, depth=depth, depth_single_blocks=depth_single, axes_dim=[16, 56, 56],
        theta=256, patch_size=[1, 1, 1], qkv_bias=True, guidance_embed=False, byt5=True, meanflow=meanflow,
        use_cond_type_embedding=True, vision_in_dim=1152, meanflow_sum=meanflow))
    m = hm.HunyuanVideo(image_model="hunyuan_video", operations=comfy.ops.manual_cast, **params)
    return load_tiny(m, seed=seed)


def tiny_hunyuan_image21(refiner: bool = False, seed: int = 0):
    """Tiny HunyuanImage 2.1 (2-D patch) or its refiner (patch 1x1x1): image models in the HunyuanVideo class."""
    import comfy.ldm.hunyuan_video.model as hm
    import comfy.ops
    params = dataclass_kwargs(hm.HunyuanVideoParams, dict(
        in_channels=64, out_channels=64, vec_in_dim=None, context_in_dim=3584, hidden_size=128, mlp_ratio=4.0,
        num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56] if refiner else [64, 64], theta=256,
        patch_size=[1, 1, 1] if refiner else [1, 1], qkv_bias=True, guidance_embed=refiner, byt5=not refiner,
        meanflow=False))
    m = hm.HunyuanVideo(image_model="hunyuan_video", operations=comfy.ops.manual_cast, **params)
    return load_tiny(m, seed=seed)


def tiny_cogvideox(num_layers: int = 3, v15: bool = False, seed: int = 0):
    """Tiny CogVideoX (ComfyUI >= 0.2x native): 1.0 layout (Conv2d patch 2, no temporal patch)
    or 1.5 layout (Linear patch, patch_size_t 2). Rotary positions, T5 text 4096."""
    import comfy.ldm.cogvideo.model as cm
    import comfy.ops
    m = cm.CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=64, in_channels=16, out_channels=16, time_embed_dim=64,
        text_embed_dim=4096, num_layers=num_layers, patch_size=2, patch_size_t=2 if v15 else None,
        use_rotary_positional_embeddings=True, use_learned_positional_embeddings=False,
        operations=comfy.ops.manual_cast)
    return load_tiny(m, seed=seed)


def tiny_sd3(seed: int = 0):
    """Tiny SD3-style MMDiT (an image DiT STAS does not support); hidden = 64 * depth."""
    import comfy.ldm.modules.diffusionmodules.mmdit as mm
    import comfy.ops
    m = mm.MMDiT(input_size=None, patch_size=2, in_channels=16, out_channels=16, depth=2, adm_in_channels=2048,
                 context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}},
                 pos_embed_max_size=16, num_patches=256, pos_embed_scaling_factor=None, operations=comfy.ops.manual_cast)
    return load_tiny(m, seed=seed)


def tiny_ltxv(seed: int = 0):
    """Tiny LTX-Video (a video DiT STAS does not support)."""
    import comfy.ldm.lightricks.model as lm
    import comfy.ops
    m = lm.LTXVModel(in_channels=128, cross_attention_dim=128, attention_head_dim=4, num_attention_heads=32,
                     caption_channels=4096, num_layers=1, operations=comfy.ops.manual_cast)
    return load_tiny(m, seed=seed)


# -- ComfyUI's own execution path, in process -------------------------------------------

def ensure_extra_node(node_type: str, module_file: str) -> None:
    """Load ComfyUI's comfy_extras/<module_file> when ``node_type`` is not registered yet (in-process
    tests import ComfyUI without its start-up, which loads the extras)."""
    import nodes as comfy_nodes
    if node_type not in comfy_nodes.NODE_CLASS_MAPPINGS:
        path = str(comfyui_path() / "comfy_extras" / module_file)
        assert asyncio.run(comfy_nodes.load_custom_node(path, module_parent="comfy_extras")) is not False


def ensure_test_nodes() -> None:
    """Load tests/comfy_test_nodes (stand-in text encoder, CLIP vision, VAE) once."""
    import nodes as comfy_nodes
    if "STASTestTextEncoder" not in comfy_nodes.NODE_CLASS_MAPPINGS:
        path = str(Path(__file__).resolve().parent / "comfy_test_nodes")
        assert asyncio.run(comfy_nodes.load_custom_node(path)) is not False


class _Server:
    """What PromptExecutor needs of ComfyUI's PromptServer (messages land in status_messages)."""
    client_id = last_node_id = last_prompt_id = None

    def send_sync(self, event, data, sid=None):
        pass

    def queue_updated(self):
        pass


def run_prompt(prompt):
    """Validate and execute an API-format prompt in-process with ComfyUI's PromptExecutor."""
    import execution
    valid = asyncio.run(execution.validate_prompt("t", prompt, None))
    assert valid[0], valid
    if "cache_args" in inspect.signature(execution.PromptExecutor).parameters:   # newer ComfyUI
        ex = execution.PromptExecutor(_Server(), cache_args={"lru": 0, "ram": 2.0, "ram_inactive": 4.0})
    else:
        ex = execution.PromptExecutor(_Server())
    if hasattr(ex, "execute_async"):
        asyncio.run(ex.execute_async(prompt, "t", {}, valid[2]))
    else:
        ex.execute(prompt, "t", {}, valid[2])
    return ex


@contextlib.contextmanager
def temp_comfy_dirs(tmp_path: Path, diffusion_model, filename: str):
    """ComfyUI's output/temp folders and a diffusion_models folder holding ``diffusion_model`` saved
    as ``filename``, all under tmp_path (the testbed itself is never written); restored after."""
    import folder_paths
    from safetensors.torch import save_file
    old = folder_paths.get_output_directory(), folder_paths.get_temp_directory()
    folder_paths.set_output_directory(str(tmp_path / "output"))
    folder_paths.set_temp_directory(str(tmp_path / "temp"))
    models = tmp_path / "diffusion_models"
    models.mkdir()
    save_file({k: v.contiguous() for k, v in diffusion_model.state_dict().items()}, str(models / filename))
    folder_paths.add_model_folder_path("diffusion_models", str(models))
    try:
        yield tmp_path
    finally:
        folder_paths.set_output_directory(old[0])
        folder_paths.set_temp_directory(old[1])
        folder_paths.folder_names_and_paths["diffusion_models"][0].remove(str(models))
        folder_paths.filename_list_cache.pop("diffusion_models", None)
