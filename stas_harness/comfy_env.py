"""ComfyUI in this process: import it from a checkout, load this pack the way ComfyUI loads custom
nodes, call the pack's nodes at the defaults their schema declares, sample, run API prompts.

Tests find ComfyUI through $COMFYUI_PATH (require_comfy(); they skip, saying why, without one);
bench and tools pass the checkout to import_comfyui() and load_pack() themselves.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import os
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
TESTS_DIR = PACK_DIR / "tests"
_loaded: dict = {}


def comfyui_path() -> Path | None:
    p = os.environ.get("COMFYUI_PATH")
    if p and (Path(p) / "comfy" / "model_patcher.py").exists():
        return Path(p)
    return None


def import_comfyui(src: Path | str, cpu: bool = True, **cli_args) -> None:
    """Make the ComfyUI checkout at ``src`` importable and set its command-line ``args`` (``cpu``, and any
    other given) before comfy.model_management reads them. The one place the harness touches sys.path."""
    if str(src) not in sys.path:
        sys.path.insert(0, str(src))
    from comfy.cli_args import args
    args.cpu = cpu
    for k, v in cli_args.items():
        setattr(args, k, v)
    import comfy.model_management  # noqa: F401  (after the args)


def load_pack(pack_dir: Path | str = PACK_DIR):
    """Load this pack (or the copy of it at ``pack_dir``: the bench compares two) with ComfyUI's own
    custom-node loader, once; returns the pack's module, which pack_module() and Pack then use."""
    if "pack" not in _loaded:
        import nodes as comfy_nodes
        ok = asyncio.run(comfy_nodes.load_custom_node(str(pack_dir)))
        assert ok is not False, f"ComfyUI failed to load the pack at {pack_dir}"
        _loaded["pack"] = sys.modules[str(pack_dir).replace(".", "_x_")]
    return _loaded["pack"]


def require_comfy():
    """Import ComfyUI ($COMFYUI_PATH, on the CPU) and this pack; return the pack module. Skips when unavailable."""
    if "pack" in _loaded:
        return _loaded["pack"]
    root = comfyui_path()
    if root is None:
        from stas_harness.server import skip_missing
        skip_missing("real ComfyUI not found: set COMFYUI_PATH to a ComfyUI checkout (see README, 'Tests')")
    import torch
    # Tiny models: one thread is ~15x faster than fighting other processes for 2 busy cores.
    torch.set_num_threads(1)
    import_comfyui(root, cpu=True)
    return load_pack()


def comfy_version() -> str:
    import comfyui_version
    return comfyui_version.__version__


def pack_module(name: str):
    """A module of this pack as ComfyUI loaded it, e.g. pack_module('nodes.patching')."""
    pack = _loaded.get("pack") or require_comfy()
    return importlib.import_module(f"{pack.__name__}.{name}")


# -- the pack's nodes, called the way ComfyUI calls a V3 node (classmethod execute) ---------------

NODES = {"stas": "StasModelPatch", "mask": "BoundaryMaskBuilder", "rec": "MARecorder", "vis": "MAVisualizer",
         "save": "SaveMAProfile", "load": "LoadMAProfile", "meter": "TemporalSeamMeter",
         "sweep": "StasSweep"}
MODULES = {"hooks": "nodes.hooks", "fingerprint": "nodes.fingerprint", "recpatch": "nodes.recorder_patch",
           "layout": "stas_core.layout", "record": "stas_core.record", "stats": "stas_core.stats",
           "profile": "stas_core.profile"}


class Pack:
    """This pack as ComfyUI loaded it: node classes by short name (``pack.stas``, ``pack.rec``: NODES) and
    modules (``pack.layout``, ``pack.hooks``: MODULES; any other with ``pack.module('nodes.x')``)."""

    def __getattr__(self, name: str):
        if name in NODES:
            return getattr(pack_module("nodes"), NODES[name])
        if name in MODULES:
            return pack_module(MODULES[name])
        raise AttributeError(f"{name!r}: not in stas_harness.comfy_env.NODES or MODULES")

    @staticmethod
    def module(name: str):
        return pack_module(name)


def node_defaults(node_cls) -> dict:
    """The defaults a V3 node declares for its inputs, read from its own schema."""
    return {inp.id: inp.default for inp in node_cls.define_schema().inputs
            if getattr(inp, "default", None) is not None}


def run_node(node_cls, *args, **inputs):
    """``node_cls.execute`` with the node's declared defaults, ``inputs`` on top (its io.NodeOutput).
    Positional ``args`` are the node's first inputs in schema order (``run_node(StasModelPatch, model)``)."""
    given = dict(zip([inp.id for inp in node_cls.define_schema().inputs], args))
    return node_cls.execute(**{**node_defaults(node_cls), **given, **inputs})


def stas(model, **overrides):
    """STAS Model Patch on ``model`` at the node's defaults with ``overrides``; the patched MODEL.
    A test module with settings of its own binds them once: ``functools.partial(stas, blocks="1")``."""
    return run_node(Pack().stas, model=model, **overrides)[0]


def boundary_mask(**overrides):
    """Boundary Mask Builder at the node's defaults with ``overrides``; its STAS_MASK."""
    return run_node(Pack().mask, **overrides)[0]


# -- sampling ----------------------------------------------------------------------------------

def latent(t: int = 3, h: int = 8, w: int = 8, b: int = 1, c: int = 16):
    """An empty video latent [b, c, t, h, w] (zeros, as EmptyHunyuanLatentVideo gives)."""
    import torch
    return torch.zeros(b, c, t, h, w)


def text_cond(tokens: int = 8, seed: int = 1, dim: int = 4096, batch: int = 1, **extra):
    """A CONDITIONING of random text embeddings [batch, tokens, dim] (a seeded stand-in for a prompt)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, dim, generator=g), dict(extra)]]


def sample(model, latent, steps: int = 4, cfg: float = 2.0, positive=None, negative=None, seed: int = 0,
           sampler: str = "euler", scheduler: str = "simple", **kw):
    """comfy.sample.sample, as KSampler runs it (text_cond seeds 1 / 2 unless given); the denoised latent."""
    import comfy.sample
    import torch
    noise = comfy.sample.prepare_noise(latent, seed)
    positive = positive if positive is not None else text_cond(seed=1)
    negative = negative if negative is not None else text_cond(seed=2)
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, latent,
                                   disable_pbar=True, seed=seed, **kw)


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
        assert asyncio.run(comfy_nodes.load_custom_node(str(TESTS_DIR / "comfy_test_nodes"))) is not False


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
