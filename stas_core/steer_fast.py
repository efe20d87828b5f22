"""The STAS hot path: one call per steered block output, decided on the device.

``steer.steer_`` is the op as the paper states it; this module is how the patch runs it
thousands of times per video without costing anything measurable:

* **Gated on the device.** Whether a row is steered this call (its CFG chunk is picked and
  its sigma lies in the window ``lo < sigma <= hi``) and whether a block still has to
  detect its channels (the ``need`` flag of this run) are tensor values that the kernels
  read themselves.  The host never reads a device tensor (no synchronisation), and a compiled
  graph holds no Python branch on per-call state.  That matters under ComfyUI's
  TorchCompileModel, whose guard filter drops every guard on ``transformer_options``: a
  Python ``if`` there would freeze the first call's decision into every later call.
* **Fused.** On CUDA with Triton: two launches steer a block (a split max-reduction over
  the visual tokens, then the gather-steer-scatter); auto detection adds two more that
  return at once after the first steered call of the run.  Elsewhere a torch fallback of
  the same math runs (same values; it computes detection every call and blends it in with
  ``torch.where``, so it stays sync-free too).
* **Opaque to torch.compile.** Under compilation the call goes through the custom op
  ``comfyui_stas::steer_block_`` (in-place on ``h`` and the run's channel tables): no graph
  break, nothing to recompile, and inductor keeps the hidden state in place.  Everything
  that may change between runs of one compiled model (alpha, window, threshold, mask,
  resolution, channels) reaches the op as a tensor input (per-run scalars packed into one
  small CPU tensor, read by the op's body), never as a constant baked into the graph.
  The one thing a graph does bake in is which blocks carry a patch (their flat index): so the
  op resolves its table row from the current plan's map (``SteerCall.block_rows``), leaves a
  block the plan no longer steers untouched, and marks in ``SteerCall.ran`` which blocks it
  ran for, so that a run whose graph lacks a newly chosen block is reported, not silent.

Set ``STAS_DISABLE_TRITON=1`` to force the torch fallback (used by the benchmark and as an
escape hatch should a Triton build misbehave on some GPU).
"""
from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import torch

from .channels import MAX_CHANNELS, detect_ma_channels
from .steer import steer_rows_

log = logging.getLogger(__name__)


# -- what one call of the op gets -----------------------------------------------------------

@dataclass(frozen=True)
class StepParams:
    """The per-call scalars of the op.  They travel as one small float64 CPU tensor (``pack``)
    so that a compiled graph takes them as an input instead of baking them in; the op's body
    reads it on the host, which costs no device synchronisation."""

    alpha: float
    lo: float            # the sigma window: rows are steered where lo < sigma <= hi
    hi: float
    threshold: float     # auto detection: minimum peak-to-mean ratio
    detect: bool         # auto channels (the tables' ``need`` flags say which blocks still detect)
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
class SteerCall:
    """The tensors of one model call for one STAS plan (all on ``h``'s device except params).

    chans int64 / valid bool [n_blocks, >= n_chans] and need int32 [n_blocks]: the run's
    channel tables (row ``pos`` per block; detection writes them).  token_idx int64
    [>= n_tok]: steered tokens relative to the first video token.  row_lam float32 [B]: the
    blend of each row (0 = not steered).  sigma [B] or [1].  params: ``StepParams.pack()``.
    """

    chans: torch.Tensor
    valid: torch.Tensor
    need: torch.Tensor
    token_idx: torch.Tensor
    row_lam: torch.Tensor
    sigma: torch.Tensor
    params: torch.Tensor
    block_rows: Optional[torch.Tensor] = None
    ran: Optional[torch.Tensor] = None

    def __deepcopy__(self, memo):
        return self


@dataclass(frozen=True)
class BlockView:
    """One block output as the implementations see it: geometry resolved, scalars unpacked."""

    h: torch.Tensor
    call: SteerCall
    p: StepParams
    pos: int
    vis_start: int


def view_of(h: torch.Tensor, call: SteerCall, pos: int, vis_offset: int) -> BlockView:
    """Resolve this call's geometry, refusing any that would index outside ``h``."""
    p = StepParams.unpack(call.params)
    vis_start = int(vis_offset) + p.prefix
    if h.dim() != 3 or vis_start < 0 or vis_start + p.n_visual > h.shape[1]:
        raise RuntimeError(
            f"STAS: a steered block output of shape {tuple(h.shape)} has fewer than the {p.n_visual} video tokens "
            f"after {vis_start} others. This model variant lays tokens out in a way STAS does not know; "
            "please report it with the workflow.")
    if not (0 <= p.n_tok <= min(p.n_visual, call.token_idx.numel())
            and 0 < p.n_chans <= min(MAX_CHANNELS, call.chans.shape[-1], h.shape[-1])):
        raise RuntimeError(f"STAS: inconsistent call parameters {p} for tables {tuple(call.chans.shape)}.")
    return BlockView(h, call, p, pos, vis_start)


# -- torch fallback (any device) ------------------------------------------------------------

def _row_weights(v: BlockView) -> torch.Tensor:
    """float32 [B]: row_lam inside the sigma window, 0 outside (decided on the device)."""
    row_lam, n_rows = v.call.row_lam, v.h.shape[0]
    s = v.call.sigma.reshape(-1)
    if s.numel() != n_rows:
        s = s[torch.arange(n_rows, device=s.device) % s.numel()]
    s = s.to(device=row_lam.device, dtype=torch.float32)
    return torch.where((s > v.p.lo) & (s <= v.p.hi), row_lam, torch.zeros_like(row_lam))


def steer_torch_(v: BlockView) -> None:
    """``steer.steer_rows_`` with the window applied to the row blends on the device."""
    k, c = v.p.n_chans, v.call
    steer_rows_(v.h, v.vis_start, v.p.n_visual, c.token_idx[:v.p.n_tok], c.chans[v.pos, :k], c.valid[v.pos, :k],
                _row_weights(v), v.p.alpha)


def detect_torch_(v: BlockView) -> None:
    """Auto channel detection into table row ``pos`` while ``need[pos]`` is set and some row is
    steered (then clears it).  Computes every call and blends with ``torch.where``: no sync."""
    c, pos = v.call, v.pos
    idx, ok, _ = detect_ma_channels(v.h.narrow(1, v.vis_start, v.p.n_visual), v.p.threshold, v.p.n_chans)
    k = idx.numel()
    on = (c.need[pos] != 0) & (_row_weights(v) != 0).any()
    c.chans[pos, :k] = torch.where(on, idx, c.chans[pos, :k])
    c.valid[pos, :k] = torch.where(on, ok, c.valid[pos, :k])
    c.need[pos] = torch.where(on, torch.zeros_like(c.need[pos]), c.need[pos])


# -- dispatch --------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _triton_module():
    """stas_core.steer_triton, or None where Triton is missing or disabled."""
    if os.environ.get("STAS_DISABLE_TRITON", "") not in ("", "0"):
        return None
    try:
        from . import steer_triton
    except Exception as e:  # no Triton (CPU/MPS builds of torch), or a broken install
        log.debug("STAS: Triton kernels unavailable (%s); using the torch fallback.", e)
        return None
    return steer_triton


@lru_cache(maxsize=16)
def _device_supported(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    if getattr(torch.version, "hip", None):
        return True
    return torch.cuda.get_device_capability(device) >= (7, 0)


def uses_triton(h: torch.Tensor) -> bool:
    """True when the op takes the Triton path for a tensor like ``h``."""
    return h.is_cuda and _triton_module() is not None and _device_supported(h.device)


def device_guard(h: torch.Tensor):
    """Make ``h``'s GPU current while kernels launch (Triton launches on the current device)."""
    return torch.cuda.device(h.device) if h.is_cuda else nullcontext()


def _detect(v: BlockView) -> None:
    if not v.p.detect:
        return
    if uses_triton(v.h):
        _triton_module().detect_triton_(v)
    else:
        detect_torch_(v)


def _steer(v: BlockView) -> None:
    if uses_triton(v.h):
        _triton_module().steer_triton_(v)
    else:
        steer_torch_(v)


def detect_block_(h: torch.Tensor, call: SteerCall, pos: int, vis_offset: int = 0) -> None:
    """Auto channel detection of one block into row ``pos`` of the run's tables, done on the
    device only while ``need[pos]`` is set and some row is steered this call (then cleared)."""
    with device_guard(h):
        _detect(view_of(h, call, pos, vis_offset))


def steer_only_(h: torch.Tensor, call: SteerCall, pos: int, vis_offset: int = 0) -> None:
    """Steer the rows of ``h`` that this call steers, in place, with the channels in the tables."""
    with device_guard(h):
        _steer(view_of(h, call, pos, vis_offset))


def steer_block_(h: torch.Tensor, call: SteerCall, pos: int, vis_offset: int = 0) -> None:
    """Steer one block output ``h`` [B, L, D] in place (eager entry point): detect the
    channels first where this run still has to (auto mode), then steer.  The call's settings
    are unpacked and checked once for both.

    ``pos``: the block's row in the tables.  ``vis_offset``: the block's own offset of the
    video tokens (e.g. the text tokens before them in a single-stream block), to which the
    call's ``prefix`` is added.
    """
    v = view_of(h, call, pos, vis_offset)
    with device_guard(h):
        _detect(v)
        _steer(v)


# -- torch.compile: the same call as one opaque custom op ------------------------------------

def resolve_row(block_rows: Optional[torch.Tensor], ran: Optional[torch.Tensor], pos: int, flat: int) -> int:
    """The table row of block ``flat`` in the current plan (-1: not steered), marking it in ``ran``.

    A compiled graph keeps the block patches it was traced with (and their ``pos``), so the op
    asks the map of the plan that runs now; both tensors live on the CPU (no device sync).
    Without a map (direct calls, old callers) ``pos`` is used as given."""
    if block_rows is None or flat < 0:
        return pos
    if flat >= block_rows.numel():
        return -1
    if ran is not None and flat < ran.numel():
        ran[flat] = 1
    return int(block_rows[flat])


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

    @custom_op(OP_NAME, mutates_args=("h", "chans", "valid", "need", "ran"))
    def _op(h: torch.Tensor, chans: torch.Tensor, valid: torch.Tensor, need: torch.Tensor,
            token_idx: torch.Tensor, row_lam: torch.Tensor, sigma: torch.Tensor, params: torch.Tensor,
            block_rows: Optional[torch.Tensor], ran: Optional[torch.Tensor], pos: int, flat: int,
            vis_offset: int) -> None:
        row = resolve_row(block_rows, ran, pos, flat)
        if row >= 0:
            steer_block_(h, SteerCall(chans, valid, need, token_idx, row_lam, sigma, params), row, vis_offset)

    @_op.register_fake
    def _(h, chans, valid, need, token_idx, row_lam, sigma, params, block_rows, ran, pos, flat, vis_offset):
        return None

    return _op


# The package may be imported twice under two names (ComfyUI's loader and a test run);
# the op is registered once and the second import reuses it (same code, same behaviour).
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


def steer_block(h: torch.Tensor, call: SteerCall, pos: int, vis_offset: int = 0, flat: int = -1) -> None:
    """``steer_block_``, routed through the custom op while torch.compile traces.  ``flat``: the
    block's index in the model, which the op maps to its current row (see ``resolve_row``);
    eager calls always come from the current plan, so they use ``pos`` at no extra cost."""
    if _OP is not None and compiling():
        _OP(h, call.chans, call.valid, call.need, call.token_idx, call.row_lam, call.sigma, call.params,
            call.block_rows, call.ran, pos, flat, vis_offset)
    else:
        steer_block_(h, call, pos, vis_offset)
