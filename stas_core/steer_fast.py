"""The STAS hot path: one call per steered block output, decided on the device.

``steer.steer_`` is the op as the paper states it; this module is how the patch runs it
thousands of times per video without costing anything measurable:

* **Gated on the device.** Whether a row is steered this call (its CFG chunk is picked and
  its sigma lies in the window ``lo < sigma <= hi``) and whether a block still has to
  detect its channels (the ``need`` flag of this run) are tensor values that the kernels
  read themselves.  The host never reads a tensor (no synchronisation), and a compiled
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
  break, nothing to recompile, and inductor keeps the hidden state in place.

Set ``STAS_DISABLE_TRITON=1`` to force the torch fallback (used by the benchmark and as an
escape hatch should a Triton build misbehave on some GPU).
"""
from __future__ import annotations

import logging
import os
from functools import lru_cache

import torch

from .channels import detect_ma_channels
# The sigma window as float32 bounds (lo < sigma <= hi): defined with all window logic in .schedule.
from .schedule import ALWAYS, F32_MAX, f32_floor, window_bounds  # noqa: F401

log = logging.getLogger(__name__)

# -- torch fallback (any device; also the reference the kernels are tested against) --------

def _row_weights(row_lam: torch.Tensor, sigma: torch.Tensor, n_rows: int, lo: float, hi: float) -> torch.Tensor:
    s = sigma.reshape(-1)
    if s.numel() != n_rows:
        s = s[torch.arange(n_rows, device=s.device) % s.numel()]
    s = s.to(device=row_lam.device, dtype=torch.float32)
    return torch.where((s > lo) & (s <= hi), row_lam, torch.zeros_like(row_lam))


def steer_gated_torch_(h, vis_start, n_visual, token_idx, chans, valid, pos, row_lam, sigma, lo, hi, alpha):
    """``steer.steer_`` with per-row blends ``row_lam`` [B] (0 = row untouched) and the window
    decided on the device.  chans/valid: tables [n_blocks, K]; row ``pos`` is used."""
    w = _row_weights(row_lam, sigma, h.shape[0], lo, hi)                     # [B]
    ch = chans[pos]
    vis = h.narrow(1, vis_start, n_visual)
    sel = vis.index_select(2, ch)                                            # [B, N, K]
    ref = sel.abs().amax(dim=1, keepdim=True).float() * float(alpha)         # [B, 1, K]
    cur = sel.index_select(1, token_idx).float()                             # [B, S, K]
    target = torch.where(cur >= 0, ref, -ref)
    new = torch.lerp(cur, target, w[:, None, None].expand_as(cur))
    keep = (w == 0)[:, None, None] | ~valid[pos][None, None, :]
    new = torch.where(keep, cur, new)
    if h.dtype.is_floating_point:
        fi = torch.finfo(h.dtype)
        new = new.clamp(fi.min, fi.max)
    vis[:, token_idx[:, None], ch[None, :]] = new.to(h.dtype)
    return h


def detect_gated_torch_(h, vis_start, n_visual, chans, valid, need, pos, row_lam, sigma, lo, hi, threshold):
    """Auto channel detection into table row ``pos`` while ``need[pos]`` is set and some row is
    steered (then clears it).  Computes every call and blends with ``torch.where``: no sync."""
    k_max = chans.shape[-1]
    idx, ok, _ = detect_ma_channels(h.narrow(1, vis_start, n_visual), threshold, k_max)
    k = idx.numel()
    w = _row_weights(row_lam, sigma, h.shape[0], lo, hi)
    on = (need[pos] != 0) & (w != 0).any()
    chans[pos, :k] = torch.where(on, idx, chans[pos, :k])
    valid[pos, :k] = torch.where(on, ok, valid[pos, :k])
    need[pos] = torch.where(on, torch.zeros_like(need[pos]), need[pos])


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
    """True when ``steer_block_`` takes the Triton path for a tensor like ``h``."""
    return h.is_cuda and _triton_module() is not None and _device_supported(h.device)


def detect_gated_(h, vis_start, n_visual, chans, valid, need, pos, row_lam, sigma, lo, hi, threshold) -> None:
    """Auto channel detection of one block into row ``pos`` of this run's tables, done on the
    device only while ``need[pos]`` is set and some row is steered this call (then cleared)."""
    if uses_triton(h):
        _triton_module().detect_triton_(h, vis_start, n_visual, chans, valid, need, pos, row_lam, sigma, lo, hi,
                                        threshold)
    else:
        detect_gated_torch_(h, vis_start, n_visual, chans, valid, need, pos, row_lam, sigma, lo, hi, threshold)


def steer_gated_(h, vis_start, n_visual, token_idx, chans, valid, pos, row_lam, sigma, lo, hi, alpha) -> None:
    """Steer the rows of ``h`` that this call steers (see ``steer_block_``), in place."""
    if uses_triton(h):
        _triton_module().steer_triton_(h, vis_start, n_visual, token_idx, chans, valid, pos, row_lam, sigma, lo, hi,
                                       alpha)
    else:
        steer_gated_torch_(h, vis_start, n_visual, token_idx, chans, valid, pos, row_lam, sigma, lo, hi, alpha)


def steer_block_(h: torch.Tensor, chans: torch.Tensor, valid: torch.Tensor, need: torch.Tensor, pos: int,
                 token_idx: torch.Tensor, row_lam: torch.Tensor, sigma: torch.Tensor,
                 vis_start: int, n_visual: int, lo: float, hi: float, alpha: float,
                 threshold: float, detect: bool) -> None:
    """Steer one block output ``h`` [B, L, D] in place (eager entry point).

    chans int64 / valid bool [n_blocks, K] and need int32 [n_blocks]: this run's channel
    tables; row ``pos`` belongs to this block.  With ``detect`` the channels are detected
    into them first (once per run: ``need[pos]`` is then cleared on the device).
    token_idx int64 [S]: steered tokens relative to ``vis_start``.  row_lam float32 [B]:
    the blend of each batch row (0 = not steered).  sigma [B] or [1]: this call's sigma;
    rows are steered only where ``lo < sigma <= hi``.  All tensors on ``h``'s device.
    """
    if detect:
        detect_gated_(h, vis_start, n_visual, chans, valid, need, pos, row_lam, sigma, lo, hi, threshold)
    steer_gated_(h, vis_start, n_visual, token_idx, chans, valid, pos, row_lam, sigma, lo, hi, alpha)


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
    def _op(h: torch.Tensor, chans: torch.Tensor, valid: torch.Tensor, need: torch.Tensor, pos: int,
            token_idx: torch.Tensor, row_lam: torch.Tensor, sigma: torch.Tensor,
            vis_start: int, n_visual: int, lo: float, hi: float, alpha: float,
            threshold: float, detect: bool) -> None:
        steer_block_(h, chans, valid, need, pos, token_idx, row_lam, sigma, vis_start, n_visual, lo, hi,
                     alpha, threshold, detect)

    @_op.register_fake
    def _(h, chans, valid, need, pos, token_idx, row_lam, sigma, vis_start, n_visual, lo, hi, alpha,
          threshold, detect):
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


def steer_block(h, chans, valid, need, pos, token_idx, row_lam, sigma, vis_start, n_visual, lo, hi, alpha,
                threshold, detect) -> None:
    """``steer_block_``, routed through the custom op while torch.compile traces."""
    if _OP is not None and compiling():
        _OP(h, chans, valid, need, pos, token_idx, row_lam, sigma, vis_start, n_visual, lo, hi, alpha,
            threshold, detect)
    else:
        steer_block_(h, chans, valid, need, pos, token_idx, row_lam, sigma, vis_start, n_visual, lo, hi, alpha,
                     threshold, detect)
