"""The pack's one patch stack: a plan (``Plan``), its block patches and two keyed wrappers, used
by STAS Model Patch (``patching.StasPlan``) and the MA Recorder (``recorder_patch.RecorderPlan``).
The path node -> plan -> install -> wrappers -> block hook -> op: docs/architecture.md.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Tuple

from ..stas_core.shared import Shared
from .families import BlockRef, Family

WRAPPER_KEY = "comfyui-stas"
STEER_OBSERVERS = WRAPPER_KEY + ".steer_observers"
"""transformer_options key of a tuple of observers with ``stas_steer(phase, ref, h, vis_start, grid,
token_idx, channels, valid, samples, steered)``, called by STAS with phase "before" and "after" it steers a
block (the MA Recorder puts itself there in the calls it records)."""


@dataclass(eq=False)
class Plan(Shared):
    """What one node installs on a MODEL clone: the blocks it patches and what runs at each
    sampling run, model call and block call (subclasses fill in those methods)."""

    family: Family
    blocks: Tuple[BlockRef, ...]
    node_name: ClassVar[str] = "STAS"         # starts this node's error messages
    key_prefix: ClassVar[str] = WRAPPER_KEY
    key: ClassVar[str] = WRAPPER_KEY + ".0"   # set per plan by ``install`` (see ``stable_key``)

    # -- one sampling run (the OUTER_SAMPLE wrapper) ----------------------------------------
    video_only: ClassVar[str] = "STAS steers video models"

    def validate_latent(self, dm, shape: Tuple[int, ...]) -> None:
        """Before step one: refuse a latent this plan cannot work on (a ValueError naming the fix)."""
        if len(shape) != 5:
            raise ValueError(f"{self.node_name}: the sampler got a latent of shape {tuple(shape)}, not a video latent "
                             f"[B, C, T, H, W]. {self.video_only}; remove it from image workflows.")

    def start_run(self, guider, dm, shape: Tuple[int, ...], sigmas) -> Any:
        """This run's state, after ``validate_latent`` and before step one (raise to refuse the run)."""
        raise NotImplementedError

    def end_run(self, run: Any) -> None:
        """After the run, finished or not."""

    def finish_run(self, run: Any, out) -> None:
        """After a run that finished."""

    # -- one model call (the APPLY_MODEL wrapper) ---------------------------------------------
    def call_context(self, run: Any, model, x, t, transformer_options, kwargs) -> Optional[Any]:
        """What the block hooks of this call get under ``transformer_options[key]``, with ``calls_plan`` True
        (None: the plan sits this call out)."""
        raise NotImplementedError

    def call_guard(self, ctx: Any, x):
        """A context manager around the model call with context ``ctx`` (STAS: make ``x``'s GPU current for its
        kernels)."""
        return nullcontext()

    def call_options(self, transformer_options: dict, ctx: Any) -> dict:
        return {**transformer_options, self.key: ctx}

    def after_call(self, ctx: Any) -> None:
        """After the model call."""

    @property
    def layout(self) -> str:
        """What a graph traced with this plan bakes in (its key and blocks), as a keyword name."""
        return f"{self.key} " + " ".join(f"{r.kind}.{r.index}" for r in self.blocks)

    # -- one block call ------------------------------------------------------------------------
    def on_block(self, h, ref: BlockRef, ctx: Any, transformer_options) -> None:
        """Called by the block patch with the block's output ``h`` (in place)."""
        raise NotImplementedError

    # -- installing ----------------------------------------------------------------------------
    def install(self, model):
        """A clone of ``model`` (a ModelPatcher) with this plan installed; ``model`` is untouched."""
        import comfy.patcher_extension as pe

        self.key = stable_key(model, self.key_prefix)
        m = model.clone()
        dm = m.model.diffusion_model
        edges = self.family.group_edges(dm) if self.family.hook == "replace" else {}
        for ref in self.blocks:
            if self.family.hook == "replace":
                inner = replace_patch(m, ref)
                inner = None if isinstance(inner, ReleasePatch) else inner
                m.set_model_patch_replace(BlockReplacePatch(self, ref, inner, edges.get(ref.flat)),
                                          "dit", ref.kind, ref.index)
            else:
                name = self.family.object_patch_name(ref)
                m.add_object_patch(name, BlockForwardPatch(self, ref, m.object_patches.get(name)))
        if self.family.hook == "replace" and self.family.loop_keeps_output:
            first = min(r.flat for r in self.blocks)
            for ref in self.family.blocks(dm)[first + 1:]:
                if replace_patch(m, ref) is None:
                    m.set_model_patch_replace(ReleasePatch(edges.get(ref.flat)), "dit", ref.kind, ref.index)
        m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, self.key, ApplyModel(self))
        m.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, self.key, OuterSample(self))
        return m


@dataclass
class IdleCall(Shared):
    """The context of a model call the plan sits out (``call_context`` returned None) in an object-patched
    family, whose block patches find the running model's block through it."""

    diffusion_model: Any
    calls_plan = False   # every plan's own context says True: the block patches hand the call to the plan


class OuterSample(Shared):
    """Keyed OUTER_SAMPLE wrapper: the plan's run state, in that run's own clone of model_options."""

    def __init__(self, plan: Plan):
        self.plan = plan

    def __call__(self, executor, *args, **kwargs):
        import comfy.model_patcher

        plan, guider = self.plan, executor.class_obj
        noise = args[0] if args else kwargs["noise"]
        sigmas = args[3] if len(args) > 3 else kwargs.get("sigmas")
        dm = guider.model_patcher.model.diffusion_model
        shape = plan.family.latent_shape(noise.shape, kwargs.get("latent_shapes"))
        plan.validate_latent(dm, shape)
        run = plan.start_run(guider, dm, shape, sigmas)
        orig = guider.model_options
        try:
            guider.model_options = comfy.model_patcher.create_model_options_clone(orig)
            guider.model_options.setdefault("transformer_options", {})[plan.key + ".run"] = run
            out = executor(*args, **kwargs)
        finally:
            guider.model_options = orig
            plan.end_run(run)
        plan.finish_run(run, out)
        return out


class ApplyModel(Shared):
    """Keyed APPLY_MODEL wrapper: hands this call's context to the block hooks through the call's
    own transformer_options (thread-safe: MultiGPU runs passes on several devices at once)."""

    def __init__(self, plan: Plan):
        self.plan = plan

    def __call__(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        plan = self.plan
        ctx = plan.call_context(transformer_options.get(plan.key + ".run"), executor.class_obj, x, t,
                                transformer_options, kwargs)
        if ctx is None:
            if plan.family.hook == "replace":
                return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
            ctx = IdleCall(executor.class_obj.diffusion_model)  # object-patched blocks look their module up in it
        # torch.compile: TorchCompileModel's guard filter drops every guard on transformer_options, so
        # a graph traced with these block patches would run without them (STAS bypassed) or with
        # others (blocks changed). Dynamo does guard the names of the forward's keyword arguments:
        # one per active plan, named by its layout, gives each layout its own graph and lets a
        # layout seen before find its graph again. Settings are tensors and need no new graph.
        kwargs[plan.layout] = True
        with plan.call_guard(ctx, x):
            out = executor(x, t, c_concat, c_crossattn, control, plan.call_options(transformer_options, ctx), **kwargs)
        plan.after_call(ctx)
        return out


class BlockReplacePatch(Shared):
    """patches_replace["dit"][(kind, i)]: runs the block (or the patch that was there before, so
    SkipLayerGuidance and other packs keep working) and hands its output to the plan."""

    def __init__(self, plan: Plan, ref: BlockRef, inner=None, edge: Optional[str] = None):
        self.plan, self.ref, self.inner, self.edge = plan, ref, inner, edge

    def __call__(self, args, extra):
        to = args.get("transformer_options") or {}
        if self.edge == "start":
            drop_held(to)
        out = self.inner(args, extra) if self.inner is not None else extra["original_block"](args)
        ctx = to.get(self.plan.key)
        if ctx is not None and ctx.calls_plan:
            self.plan.on_block(self.plan.family.block_hidden(out), self.ref, ctx, to)
        if self.edge == "end":
            hold(to, out)
        return out


HELD = WRAPPER_KEY + ".held"
"""transformer_options key of the output dict of the last block of a group (HunyuanVideo's last double
block), until the first block of the next group empties it. Between block groups nothing rebinds the
loop's ``out``, so without this that dict would be held through the whole next group."""


def drop_held(to: dict) -> None:
    """At the first block of a later group: empty the dict the previous group's last block left."""
    held = to.pop(HELD, None)
    if held is not None:
        held.clear()


def hold(to: dict, out) -> None:
    """At the last block of a group that another group follows: leave its output dict for ``drop_held``."""
    if isinstance(out, dict):
        to[HELD] = out


class ReleasePatch(Shared):
    """patches_replace["dit"] pass-through for the unpatched blocks after a plan's first block. The
    block loops of these families keep a replaced block's output in a local (``out =
    blocks_replace[...]``) until another replaced block rebinds it; with this on every later block,
    a patched block's output is freed after the next block, as in an unpatched model
    (docs/architecture.md, "Memory")."""

    def __init__(self, edge: Optional[str] = None):
        self.edge = edge   # Family.group_edges: "start" / "end" of a block group, or None

    def __call__(self, args, extra):
        to = args.get("transformer_options")
        if self.edge == "start" and to is not None:
            drop_held(to)
        out = extra["original_block"](args)
        if self.edge == "end" and to is not None:
            hold(to, out)
        return out


def replace_patch(model, ref: BlockRef):
    """The patches_replace["dit"] patch on block ``ref`` of ``model`` (a ModelPatcher), or None."""
    dit = model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    return dit.get((ref.kind, ref.index))


class BlockForwardPatch(Shared):
    """Object patch for ``blocks.i.forward`` of families with no block-replace hook. It looks the
    block up on the running call's diffusion model, so clones with their own copy run their weights."""

    def __init__(self, plan: Plan, ref: BlockRef, inner=None):
        self.plan, self.ref, self.inner = plan, ref, inner

    def __call__(self, *args, **kwargs):
        to = kwargs.get("transformer_options") or {}
        ctx = to.get(self.plan.key)
        if self.inner is not None:
            out = self.inner(*args, **kwargs)
        else:
            if ctx is None:
                raise RuntimeError(f"{self.plan.node_name}: a patched {self.plan.family.name} block ran outside ComfyUI's "
                                   "apply_model; run the model through a ComfyUI sampler.")
            block = self.plan.family.block_module(ctx.diffusion_model, self.ref)
            out = type(block).forward(block, *args, **kwargs)
        if ctx is not None and ctx.calls_plan:
            self.plan.on_block(self.plan.family.block_hidden(out), self.ref, ctx, to)
        return out


def stable_key(model, prefix: str) -> str:
    """``prefix.<n>``, n counting the plans of this kind already on ``model``: the same for the same
    chain of nodes in every run, so a compiled graph finds its context again under new settings."""
    import comfy.patcher_extension as pe

    taken = model.wrappers.get(pe.WrappersMP.APPLY_MODEL, {})
    n = 0
    while f"{prefix}.{n}" in taken:
        n += 1
    return f"{prefix}.{n}"
