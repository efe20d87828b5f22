"""Patching glue: the objects STAS Model Patch installs on a cloned MODEL.

Layout of the patch (the way ComfyUI's own EasyCache and SkipLayerGuidance do it):

* ``StasPlan``: the user's settings, immutable after node execution, plus per-device
  copies of small index tensors.  Shared by every clone of the patched model:
  ``__deepcopy__`` returns self because older ComfyUI deep-copies ``model_options``.
* ``OuterSampleWrapper`` (keyed OUTER_SAMPLE wrapper): checks the latent before the first
  step and gives every sampling run a fresh ``RunState`` (auto-detected channels), stored
  in that run's own clone of ``model_options``: no module globals, nothing left behind.
* ``ApplyModelWrapper`` (keyed APPLY_MODEL wrapper): once per model call it decides
  whether this call is steered (sigma window, which CFG chunks) and hands the block hooks
  a ``CallContext`` through that call's own ``transformer_options`` (thread-safe: ComfyUI's
  MultiGPU nodes run cond and uncond on different devices at once).
* ``BlockReplacePatch`` (``patches_replace["dit"]``) or ``BlockForwardPatch`` (object patch
  on ``blocks.i.forward``, for CogVideoX): run the block - or the patch another node had
  already put there - and steer its output in place.
"""
from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, Optional, Tuple

import torch

from ..stas_core.channels import ChannelSelection, detect_ma_channels
from ..stas_core.layout import BoundarySpec, Grid, steer_token_indices
from ..stas_core.profile import MAProfile
from ..stas_core.schedule import SigmaWindow
from ..stas_core.steer import steer_
from .families import BlockRef, Family, cond_rows

WRAPPER_KEY = "comfyui-stas"


class _Shared:
    """Shared by reference across ModelPatcher.clone(), also where it deep-copies."""

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self


@dataclass(eq=False)
class StasPlan(_Shared):
    family: Family
    blocks: Tuple[BlockRef, ...]
    spec: BoundarySpec
    channels: ChannelSelection
    alpha: float
    lam: float
    window: SigmaWindow
    apply_to: FrozenSet[int]
    hidden_size: int
    profile: Optional[MAProfile] = None
    key: str = field(default_factory=lambda: f"{WRAPPER_KEY}.{uuid.uuid4().hex[:8]}")
    _dev: Dict[Any, torch.Tensor] = field(default_factory=dict, repr=False)

    def __deepcopy__(self, memo):
        return self

    # -- small per-device tensors, built once -------------------------------------------
    def on_device(self, key: Any, make, device: torch.device) -> torch.Tensor:
        k = (key, device)
        t = self._dev.get(k)
        if t is None:
            t = make().to(device)
            self._dev[k] = t  # dict assignment is atomic: concurrent callers at worst build it twice
        return t

    def fixed_channels(self, ref: BlockRef) -> Optional[Tuple[int, ...]]:
        if self.profile is not None:
            return self.profile.channels_for(ref.flat)
        return self.channels.explicit

    # -- the hot path -----------------------------------------------------------------
    def steer_block(self, h: torch.Tensor, ref: BlockRef, ctx: "CallContext", transformer_options) -> None:
        grid = self.family.call_grid(ctx.grid, transformer_options)
        start = self.family.visual_start(ref.kind, transformer_options, ctx.prefix)
        n_vis = grid[0] * grid[1] * grid[2]
        if start + n_vis > h.shape[1]:
            raise RuntimeError(
                f"STAS: {self.family.name} block {ref.flat} has {h.shape[1]} tokens, fewer than the {n_vis} video tokens "
                f"of grid {grid} after {start} others. This model variant lays tokens out in a way STAS does not know; "
                "please report it with the workflow.")
        dev = h.device
        token_idx = self.on_device(("tok", grid), lambda: steer_token_indices(grid, self.spec), dev)
        rows = None
        if ctx.rows is not None:
            rows = self.on_device(("rows", ctx.rows), lambda: torch.tensor(ctx.rows, dtype=torch.long), dev)
        fixed = self.fixed_channels(ref)
        if fixed is not None:
            chans = self.on_device(("ch", fixed), lambda: torch.tensor(fixed, dtype=torch.long), dev)
            valid = None
        else:
            chans, valid = ctx.run_channels(self, ref, h.narrow(1, start, n_vis))
        steer_(h, start, n_vis, token_idx, chans, self.alpha, self.lam, rows=rows, valid=valid)


class RunState:
    """State of one sampling run: channels detected at the first steered call of each block."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.detected: Dict[Tuple[int, torch.device], Tuple[torch.Tensor, torch.Tensor]] = {}

    def __deepcopy__(self, memo):
        return self


@dataclass
class CallContext:
    """What one model call tells the block hooks (lives in that call's transformer_options)."""

    steer: bool
    grid: Grid
    prefix: int
    rows: Optional[Tuple[int, ...]]  # None: every row
    run: Optional[RunState]
    diffusion_model: Any

    def __deepcopy__(self, memo):
        return self

    def run_channels(self, plan: StasPlan, ref: BlockRef, h_visual: torch.Tensor):
        sel = plan.channels
        if self.run is None:  # called outside a sampler run: detect on this call alone
            idx, valid, _ = detect_ma_channels(h_visual, sel.threshold, sel.top_k)
            return idx, valid
        key = (ref.flat, h_visual.device)
        got = self.run.detected.get(key)
        if got is None:
            with self.run._lock:
                got = self.run.detected.get(key)
                if got is None:
                    other = next((v for (f, _), v in self.run.detected.items() if f == ref.flat), None)
                    if other is not None:  # detected on another device: same channels everywhere
                        got = (other[0].to(h_visual.device), other[1].to(h_visual.device))
                    else:
                        idx, valid, _ = detect_ma_channels(h_visual, sel.threshold, sel.top_k)
                        got = (idx, valid)
                    self.run.detected[key] = got
        return got


class ApplyModelWrapper(_Shared):
    def __init__(self, plan: StasPlan):
        self.plan = plan

    def __call__(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        plan = self.plan
        base_model = executor.class_obj
        dm = base_model.diffusion_model
        sigma = float(t.reshape(-1)[0])  # one read per model call, never per block
        steer = plan.window.contains(sigma)
        rows: Optional[Tuple[int, ...]] = None
        if steer:
            picked = cond_rows(transformer_options.get("cond_or_uncond"), x.shape[0], plan.apply_to)
            steer = len(picked) > 0
            rows = None if len(picked) == x.shape[0] else picked
        if not steer and plan.family.hook == "replace":
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        ctx = CallContext(
            steer=steer,
            grid=plan.family.grid(dm, tuple(x.shape)),
            prefix=plan.family.prefix_tokens(dm, kwargs),
            rows=rows,
            run=transformer_options.get(plan.key + ".run"),
            diffusion_model=dm,
        )
        transformer_options = {**transformer_options, plan.key: ctx}
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)


class OuterSampleWrapper(_Shared):
    """Validates the latent before step one and scopes a RunState to one sampling run."""

    def __init__(self, plan: StasPlan, validate_latent):
        self.plan = plan
        self.validate_latent = validate_latent

    def __call__(self, executor, *args, **kwargs):
        import comfy.model_patcher

        guider = executor.class_obj
        noise = args[0] if args else kwargs.get("noise")
        self.validate_latent(self.plan, guider.model_patcher.model.diffusion_model, tuple(noise.shape))
        orig = guider.model_options
        try:
            guider.model_options = comfy.model_patcher.create_model_options_clone(orig)
            guider.model_options["transformer_options"][self.plan.key + ".run"] = RunState()
            return executor(*args, **kwargs)
        finally:
            guider.model_options = orig


class BlockReplacePatch(_Shared):
    """patches_replace["dit"][(kind, i)]: runs the inner block (or the patch that was there
    before, so SkipLayerGuidance and other packs keep working) and steers its output."""

    def __init__(self, plan: StasPlan, ref: BlockRef, inner=None):
        self.plan, self.ref, self.inner = plan, ref, inner

    def __call__(self, args, extra):
        out = self.inner(args, extra) if self.inner is not None else extra["original_block"](args)
        to = args.get("transformer_options") or {}
        ctx = to.get(self.plan.key)
        if ctx is not None and ctx.steer:
            self.plan.steer_block(out["img"], self.ref, ctx, to)
        return out


class BlockForwardPatch(_Shared):
    """Object patch for ``blocks.i.forward`` of families with no block-replace hook.

    It holds no reference to the module: the block is looked up on the diffusion model of
    the running call, so clones that carry their own model copy (MultiGPU, dynamic VRAM)
    run their own weights.
    """

    def __init__(self, plan: StasPlan, ref: BlockRef, inner=None):
        self.plan, self.ref, self.inner = plan, ref, inner

    def __call__(self, *args, **kwargs):
        to = kwargs.get("transformer_options") or {}
        ctx = to.get(self.plan.key)
        if self.inner is not None:
            out = self.inner(*args, **kwargs)
        else:
            if ctx is None:
                raise RuntimeError(
                    "STAS: a patched CogVideoX block ran outside ComfyUI's apply_model; "
                    "run the model through a ComfyUI sampler.")
            block = ctx.diffusion_model.blocks[self.ref.index]
            out = type(block).forward(block, *args, **kwargs)
        if ctx is not None and ctx.steer:
            self.plan.steer_block(out[0], self.ref, ctx, to)
        return out


def install(model, plan: StasPlan, validate_latent):
    """Return a clone of ``model`` (a ModelPatcher) with ``plan`` installed; ``model`` is untouched."""
    import comfy.patcher_extension as pe

    m = model.clone()
    for ref in plan.blocks:
        if plan.family.hook == "replace":
            dit = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
            inner = dit.get((ref.kind, ref.index))
            m.set_model_patch_replace(BlockReplacePatch(plan, ref, inner), "dit", ref.kind, ref.index)
        else:
            name = plan.family.object_patch_name(ref)
            m.add_object_patch(name, BlockForwardPatch(plan, ref, m.object_patches.get(name)))
    m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, plan.key, ApplyModelWrapper(plan))
    m.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, plan.key, OuterSampleWrapper(plan, validate_latent))
    return m
