"""The STAS hot path: one call per steered block output, decided on the device.

A backend (Triton kernels on CUDA, else the torch fallback) is chosen once per device; a block
call runs ``detect_`` (auto channels, while needed) and ``steer_`` of that backend. Under
torch.compile the same call is the custom op ``comfyui_stas::steer_block_``. Why it is built
this way: docs/architecture.md, "The hot path".
"""
from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Dict, NamedTuple, Optional

import torch

from .channels import MAX_CHANNELS, detect_ma_channels
from .shared import Shared
from .steer import steer_samples_

log = logging.getLogger(__name__)


# -- what one call of the op gets -----------------------------------------------------------

@dataclass(frozen=True)
class StepParams:
    """The per-call scalars of the op, packed into one float64 CPU tensor for compiled graphs."""

    alpha: float
    lo: float            # the sigma window: samples are steered where lo < sigma <= hi
    hi: float
    threshold: float     # auto detection: minimum peak-to-mean ratio
    detect: bool         # auto channels still to detect in this call (the tables' ``need`` flags say where)
    prefix: int          # tokens before the video tokens (reference latents), after the block's own offset
    n_visual: int        # video tokens: T * H * W of this call's grid
    n_tok: int           # steered tokens: the first n_tok entries of SteerCall.token_idx
    n_chans: int         # channels per block: the first n_chans columns of the tables

    def pack(self) -> torch.Tensor:
        return torch.tensor([self.alpha, self.lo, self.hi, self.threshold, float(self.detect), self.prefix,
                             self.n_visual, self.n_tok, self.n_chans], dtype=torch.float64)

    @classmethod
    def unpack(cls, t: torch.Tensor) -> "StepParams":
        a, lo, hi, th, det, pre, nv, nt, nc = t.tolist()
        return cls(a, lo, hi, th, det != 0.0, int(pre), int(nv), int(nt), int(nc))


@dataclass(frozen=True)
class SteerCall(Shared):
    """The tensors of one model call for one STAS plan (on ``h``'s device, except params, on the CPU).

    chans int64 / valid bool [slots, >= n_chans], need int32 [slots]: the run's channel tables,
    one slot per steered block. token_idx int64 [>= n_tok]: steered tokens, relative to the first
    video token. blend float32 [B]: the blend of each sample (0 = not steered). sigma [B] or [1].
    params: ``StepParams.pack()``.
    """

    chans: torch.Tensor
    valid: torch.Tensor
    need: torch.Tensor
    token_idx: torch.Tensor
    blend: torch.Tensor
    sigma: torch.Tensor
    params: torch.Tensor


class BlockView(NamedTuple):
    """One block output as a backend sees it: geometry resolved, scalars unpacked."""

    h: torch.Tensor
    call: SteerCall
    p: StepParams
    slot: int
    vis_start: int


def check_params(p: StepParams, call: SteerCall) -> None:
    """Refuse settings inconsistent with the call's tables (once per model call)."""
    if not (0 <= p.n_tok <= min(p.n_visual, call.token_idx.numel())
            and 0 < p.n_chans <= min(MAX_CHANNELS, call.chans.shape[-1])):
        raise RuntimeError(f"STAS: inconsistent call parameters {p} for tables {tuple(call.chans.shape)}.")


def view_of(h: torch.Tensor, call: SteerCall, p: StepParams, slot: int, vis_offset: int) -> BlockView:
    """The BlockView of one block call, refusing a geometry that would index outside ``h``."""
    vis_start = int(vis_offset) + p.prefix
    if h.dim() != 3 or vis_start < 0 or vis_start + p.n_visual > h.shape[1] or p.n_chans > h.shape[-1]:
        raise RuntimeError(
            f"STAS: a steered block output of shape {tuple(h.shape)} has fewer than the {p.n_visual} video tokens "
            f"after {vis_start} others. This model variant lays tokens out in a way STAS does not know; "
            "please report it with the workflow.")
    return BlockView(h, call, p, slot, vis_start)


# -- torch fallback (any device) ------------------------------------------------------------

def _sample_blend(v: BlockView) -> torch.Tensor:
    """float32 [B]: each sample's blend inside the sigma window, 0 outside (decided on the device)."""
    blend, n = v.call.blend, v.h.shape[0]
    s = v.call.sigma.reshape(-1)
    if s.numel() != n:
        s = s[torch.arange(n, device=s.device) % s.numel()]
    s = s.to(device=blend.device, dtype=torch.float32)
    return torch.where((s > v.p.lo) & (s <= v.p.hi), blend, torch.zeros_like(blend))


def steer_torch_(v: BlockView) -> None:
    """``steer.steer_samples_`` with the window applied to the blends on the device."""
    k, c = v.p.n_chans, v.call
    steer_samples_(v.h, v.vis_start, v.p.n_visual, c.token_idx[:v.p.n_tok], c.chans[v.slot, :k], c.valid[v.slot, :k],
                _sample_blend(v), v.p.alpha)


def detect_torch_(v: BlockView) -> None:
    """Auto detection into ``slot`` while ``need[slot]`` is set and some sample is steered (then
    clears it); blended in with ``torch.where``, so no host synchronisation."""
    idx, ok, _ = detect_ma_channels(v.h.narrow(1, v.vis_start, v.p.n_visual), v.p.threshold, v.p.n_chans)
    store_detected_(v, idx, ok)


def store_detected_(v: BlockView, idx: torch.Tensor, ok: torch.Tensor) -> None:
    """Write detected channels into ``slot`` where it still needs them and some sample is steered."""
    c, slot = v.call, v.slot
    k = idx.numel()
    on = (c.need[slot] != 0) & (_sample_blend(v) != 0).any()
    c.chans[slot, :k] = torch.where(on, idx, c.chans[slot, :k])
    c.valid[slot, :k] = torch.where(on, ok, c.valid[slot, :k])
    c.need[slot] = torch.where(on, torch.zeros_like(c.need[slot]), c.need[slot])


# -- the backend of a device, chosen once ---------------------------------------------------

class Backend(NamedTuple):
    name: str                               # "triton" or "torch"
    detect_: Callable[[BlockView], None]
    steer_: Callable[[BlockView], None]


TORCH = Backend("torch", detect_torch_, steer_torch_)


@lru_cache(maxsize=1)
def _triton_module():
    """stas_core.steer_triton, or None where Triton is missing or disabled (STAS_DISABLE_TRITON=1)."""
    if os.environ.get("STAS_DISABLE_TRITON", "") not in ("", "0"):
        return None
    try:
        from . import steer_triton
    except Exception as e:  # no Triton (CPU/MPS builds of torch), or a broken install
        log.debug("STAS: Triton kernels unavailable (%s); using the torch fallback.", e)
        return None
    return steer_triton


def _choose(device: torch.device) -> Backend:
    tk = _triton_module() if device.type == "cuda" else None
    if tk is None:
        return TORCH
    if not getattr(torch.version, "hip", None) and torch.cuda.get_device_capability(device) < (7, 0):
        return TORCH
    return Backend("triton", tk.detect_triton_, tk.steer_triton_)


_BACKENDS: Dict[torch.device, Backend] = {}


def backend_for(device: torch.device) -> Backend:
    """The backend of ``device``, chosen at its first call (dict reads and writes are atomic)."""
    b = _BACKENDS.get(device)
    if b is None:
        b = _BACKENDS[device] = _choose(device)
    return b


def reset_backends() -> None:
    """Forget the chosen backends (after STAS_DISABLE_TRITON changes; tests)."""
    _BACKENDS.clear()
    _triton_module.cache_clear()


def uses_triton(h: torch.Tensor) -> bool:
    """True when a block output like ``h`` is steered by the Triton kernels."""
    return backend_for(h.device).name == "triton"


def device_guard(t: torch.Tensor):
    """Make ``t``'s GPU current while kernels launch (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.is_cuda else nullcontext()


def steer_block_(h: torch.Tensor, call: SteerCall, slot: int, vis_offset: int = 0) -> None:
    """Steer one block output ``h`` [B, L, D] in place from a packed call (the op's body, tests,
    benchmarks): detect the channels where still needed, then steer, under ``h``'s device guard.
    ``slot``: the block's slot in the tables; ``vis_offset``: the block's own offset of the video
    tokens (text tokens before them in a single-stream block), to which ``prefix`` is added."""
    p = StepParams.unpack(call.params)
    check_params(p, call)
    v = view_of(h, call, p, slot, vis_offset)
    b = backend_for(h.device)
    with device_guard(h):
        if p.detect:
            b.detect_(v)
        b.steer_(v)


# -- torch.compile: the same call as one opaque custom op ------------------------------------

OP_NAME = "comfyui_stas::steer_block_"


def _find_op():
    ns, name = OP_NAME.split("::")
    try:
        return getattr(getattr(torch.ops, ns), name)
    except (AttributeError, RuntimeError):
        return None


def _register_op():
    custom_op = getattr(torch.library, "custom_op", None)
    if custom_op is None:  # torch < 2.4: dynamo traces the eager function instead
        return None

    @custom_op(OP_NAME, mutates_args=("h", "chans", "valid", "need"))
    def _op(h: torch.Tensor, chans: torch.Tensor, valid: torch.Tensor, need: torch.Tensor,
            token_idx: torch.Tensor, blend: torch.Tensor, sigma: torch.Tensor, params: torch.Tensor,
            slot: int, vis_offset: int) -> None:
        steer_block_(h, SteerCall(chans, valid, need, token_idx, blend, sigma, params), slot, vis_offset)

    @_op.register_fake
    def _(h, chans, valid, need, token_idx, blend, sigma, params, slot, vis_offset):
        return None

    return _op


# The package may be imported twice under two names (ComfyUI's loader and a test run);
# the op is registered once and the second import reuses it.
_OP = _find_op()
if _OP is None:
    try:
        _OP = _register_op()
    except RuntimeError:
        _OP = _find_op()

_is_compiling = (getattr(getattr(torch, "compiler", None), "is_compiling", None)
                 or getattr(getattr(torch, "_dynamo", None), "is_compiling", None)
                 or (lambda: False))


def compiling() -> bool:
    """True while torch.compile (dynamo) traces the calling code."""
    return bool(_is_compiling())


def steer_traced_(h: torch.Tensor, call: SteerCall, slot: int, vis_offset: int) -> None:
    """A block call inside a graph that torch.compile traces: the custom op (``steer_block_``
    where torch has no custom ops)."""
    if _OP is not None:
        _OP(h, call.chans, call.valid, call.need, call.token_idx, call.blend, call.sigma, call.params,
            slot, vis_offset)
    else:  # dynamo traces the eager call
        steer_block_(h, call, slot, vis_offset)
