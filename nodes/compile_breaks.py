"""torch.compile where the graph breaks inside every block. ComfyUI's CPU attention (sub-quadratic or split)
reads the free memory through psutil, which dynamo cannot trace; another pack's patch may break it too.

Dynamo then compiles the code after each break as a frame of its own, and STAS's block patch there is
specialised on its block: a cache entry per steered block and layout, capped by
``torch._dynamo.config.recompile_limit`` (8). Steering many blocks, or a few layouts in a row (bypassing
STAS and back, changing ``blocks``, adding a node), went past it, and dynamo then ran those frames
uncompiled, with a warning that did not say why. So a run with STAS on a compiled model samples
uncompiled (torch.compiler's "force_eager" stance), and STAS says so once before sampling, with the fix:
- with ComfyUI's CPU attention, known before the first run;
- after dynamo reported its recompile limit in this pack's code (another cause of breaks, known only
  then), from the next run on.
With a GPU attention and no break nothing changes: STAS's op is traced into the model's graph.
"""
from __future__ import annotations

import inspect
import logging
import os
import sys
from contextlib import contextmanager, nullcontext

import torch

log = logging.getLogger("comfyui-stas")

BREAKING_ATTENTION = frozenset({"attention_sub_quad", "attention_split"})
COMPILE_KEY = "torch.compile"  # comfy_api.torch_helpers: TorchCompileModel's APPLY_MODEL wrapper

_stance = getattr(getattr(torch, "compiler", None), "set_stance", None)  # torch >= 2.6
_said: set = set()  # the causes already said (once per process each)
PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def attention_of(dm):
    """The attention function the diffusion model's blocks call (their module's, else ComfyUI's default)."""
    fn = getattr(sys.modules.get(type(dm).__module__), "optimized_attention", None)
    if fn is None:
        fn = getattr(sys.modules.get("comfy.ldm.modules.attention"), "optimized_attention", None)
    try:
        return inspect.unwrap(fn) if fn is not None else None
    except ValueError:  # a wrapper cycle
        return fn


def compiled(model_patcher) -> bool:
    """TorchCompileModel compiled this model."""
    import comfy.patcher_extension as pe
    return COMPILE_KEY in model_patcher.wrappers.get(pe.WrappersMP.APPLY_MODEL, {})


def breaking_attention(model_patcher):
    """The name of the graph-breaking attention of a model that TorchCompileModel compiled, else None."""
    if not compiled(model_patcher):
        return None
    name = getattr(attention_of(model_patcher.get_model_object("diffusion_model")), "__name__", "")
    return name if name in BREAKING_ATTENTION else None


class _LimitWatch(logging.Handler):
    """Notes dynamo's "hit config.recompile_limit" warning for a frame of this pack (another pack or an
    attention override that breaks the graph inside the blocks: not known before it happens)."""

    hit = False

    def emit(self, record):
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 -- a log record that cannot format is not ours
            return
        if ("recompile_limit" in msg or "cache_size_limit" in msg) and PACK_DIR in msg:
            _LimitWatch.hit = True


_watch = _LimitWatch(logging.WARNING)
logging.getLogger("torch._dynamo").addHandler(_watch)


def start_run(plan, model_patcher) -> bool:
    """Before a run of ``plan``: whether it samples uncompiled (the run keeps the answer); said once per
    process and cause, with the fix."""
    attention = breaking_attention(model_patcher)
    limit = attention is None and _LimitWatch.hit and compiled(model_patcher)
    on = bool((attention is not None or limit) and _stance is not None)
    if not on or (attention or "limit") in _said:
        return on
    _said.add(attention or "limit")
    if attention:
        log.warning("%s: the model is compiled (TorchCompileModel), but ComfyUI's CPU attention (%s) breaks the "
                    "graph inside every block, where dynamo would compile STAS's code again for each steered block "
                    "and layout until it hits its recompile limit. So while STAS is on this model it runs "
                    "uncompiled. To run it compiled, start ComfyUI with --use-pytorch-cross-attention (or use a GPU "
                    "attention: sage, flash, xformers, PyTorch).", plan.label, attention)
    else:
        log.warning("%s: dynamo hit its recompile limit in STAS's block code in an earlier run: something breaks "
                    "the graph inside the blocks (an attention or another pack's patch), where dynamo compiles STAS's "
                    "code again for each steered block and layout. So while STAS is on a compiled model it now runs "
                    "uncompiled. To run it compiled, remove what breaks the graph (TORCH_LOGS=graph_breaks names it) "
                    "or raise torch._dynamo.config.recompile_limit, and restart ComfyUI.", plan.label)
    return on


def eager():
    """torch.compiler's force_eager stance (a compiled model runs its Python) where torch has it."""
    return _stance("force_eager") if _stance is not None else nullcontext()


@contextmanager
def call_guard(uncompiled: bool, inner):
    """``inner`` around one model call, under ``eager()`` where its run samples ``uncompiled``
    (``start_run``'s answer)."""
    with inner, (eager() if uncompiled else nullcontext()):
        yield
