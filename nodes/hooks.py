"""Generic block hooks of the pack, shared by STAS Model Patch (patching.py) and the MA Recorder
(recorder_patch.py): patches that run a block (or the patch already there) and hand its output
to a plan, chained onto whatever another node had put on the same block, and the context keys.

A *plan* is anything with ``key``, ``family``, ``blocks`` and ``steer_block(h, ref, ctx,
transformer_options)``; its APPLY_MODEL wrapper puts a context with ``steer`` and
``diffusion_model`` under ``transformer_options[plan.key]`` for every model call.
"""
from __future__ import annotations

from .families import BlockRef

WRAPPER_KEY = "comfyui-stas"
STEER_OBSERVERS = WRAPPER_KEY + ".steer_observers"
"""transformer_options key of a tuple of objects with ``stas_steer(phase, ref, h, vis_start, grid,
token_idx, channels, valid, rows)``, called by ``StasPlan.steer_block`` with phase "before" and
"after" steering (the MA Recorder puts itself there in the calls it records; absent otherwise)."""


class Shared:
    """Shared by reference across ModelPatcher.clone(), also where it deep-copies."""

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self


class BlockReplacePatch(Shared):
    """patches_replace["dit"][(kind, i)]: runs the inner block (or the patch that was there
    before, so SkipLayerGuidance and other packs keep working) and steers its output.

    ``plan`` is anything with ``key`` and ``steer_block(h, ref, ctx, transformer_options)``, and
    ``ctx`` anything with ``steer`` and ``diffusion_model``: the MA Recorder reuses both patches."""

    def __init__(self, plan, ref: BlockRef, inner=None):
        self.plan, self.ref, self.inner = plan, ref, inner

    def __call__(self, args, extra):
        out = self.inner(args, extra) if self.inner is not None else extra["original_block"](args)
        to = args.get("transformer_options") or {}
        ctx = to.get(self.plan.key)
        if ctx is not None and ctx.steer:
            self.plan.steer_block(out["img"], self.ref, ctx, to)
        return out


class BlockForwardPatch(Shared):
    """Object patch for ``blocks.i.forward`` of families with no block-replace hook.

    It holds no reference to the module: the block is looked up on the diffusion model of
    the running call, so clones that carry their own model copy (MultiGPU, dynamic VRAM)
    run their own weights.
    """

    def __init__(self, plan, ref: BlockRef, inner=None):
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


def chain_block_patches(m, plan) -> None:
    """Put ``plan``'s block patches on the clone ``m``, each wrapping the patch already there
    (any plan with ``family``, ``blocks``, ``key`` and ``steer_block``: STAS and the MA Recorder)."""
    for ref in plan.blocks:
        if plan.family.hook == "replace":
            dit = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
            inner = dit.get((ref.kind, ref.index))
            m.set_model_patch_replace(BlockReplacePatch(plan, ref, inner), "dit", ref.kind, ref.index)
        else:
            name = plan.family.object_patch_name(ref)
            m.add_object_patch(name, BlockForwardPatch(plan, ref, m.object_patches.get(name)))


def stable_key(model, prefix: str) -> str:
    """``prefix.<n>``, n counting the plans of this kind already on ``model``: the same for the
    same chain of nodes in every run, so a compiled graph (which keeps the keys it was traced
    with) finds its context again when a node re-runs with other settings."""
    import comfy.patcher_extension as pe

    taken = model.wrappers.get(pe.WrappersMP.APPLY_MODEL, {})
    n = 0
    while f"{prefix}.{n}" in taken:
        n += 1
    return f"{prefix}.{n}"
