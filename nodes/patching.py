"""Patching glue: the objects STAS Model Patch installs on a cloned MODEL.

Layout of the patch (the way ComfyUI's own EasyCache and SkipLayerGuidance do it):

* ``StasPlan``: the user's settings, immutable after node execution, plus per-device
  copies of small index tensors.  Shared by every clone of the patched model:
  ``__deepcopy__`` returns self because older ComfyUI deep-copies ``model_options``.
* ``OuterSampleWrapper`` (keyed OUTER_SAMPLE wrapper): checks the latent before the first
  step and gives every sampling run a fresh ``RunState`` (auto-detected channels), stored
  in that run's own clone of ``model_options``: no module globals, nothing left behind.
* ``ApplyModelWrapper`` (keyed APPLY_MODEL wrapper): once per model call it hands the
  block hooks a ``CallContext`` through that call's own ``transformer_options``
  (thread-safe: ComfyUI's MultiGPU nodes run cond and uncond on different devices at once):
  which CFG rows are steered, and this call's sigma as a tensor.  The sigma window is
  checked on the device by the steering kernels, so no call reads a tensor on the host
  and a compiled model holds no per-call Python branch (see stas_core.steer_fast).
* Compiled models (ComfyUI's TorchCompileModel drops its guards on ``transformer_options``,
  so the compiled graph keeps the Python objects and constants of the run it was traced in):
  the context sits under a key that stays the same across clones and runs (``stable_key``),
  and every setting that may change between runs reaches the op as a tensor (``SteerCall``).
  The graph also keeps the block patches it was traced with: the op maps each patched block to
  the current plan's row (-1: left untouched) and records which blocks it ran for, and the
  OUTER_SAMPLE wrapper warns after the run about plan blocks the compiled graph never reached.
* The block patches themselves (``hooks.py``, shared with the MA Recorder) run the block - or
  the patch another node had already put there - and hand its output to ``StasPlan.steer_block``.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, Optional, Tuple

import torch

from ..stas_core.channels import MAX_CHANNELS, ChannelSelection
from ..stas_core.layout import BoundarySpec, Grid, steer_token_indices
from ..stas_core.profile import MAProfile
from ..stas_core.schedule import SigmaWindow
from ..stas_core.steer_fast import SteerCall, StepParams, compiling, detect_block_, steer_block, steer_only_
from .families import BlockRef, Family
from .guiders import ALL_ROLES, DEFAULT, NEGATIVE, POSITIVE, GuiderPasses, cond_rows, passes_of
from .hooks import STEER_OBSERVERS, WRAPPER_KEY, Shared, chain_block_patches, stable_key

log = logging.getLogger("comfyui-stas")
@dataclass(eq=False)
class StasPlan(Shared):
    family: Family
    blocks: Tuple[BlockRef, ...]
    spec: BoundarySpec
    channels: ChannelSelection
    alpha: float
    lam: float
    window: SigmaWindow
    apply_to: FrozenSet[str]         # roles of guiders.py: positive / negative / other
    hidden_size: int
    profile: Optional[MAProfile] = None
    label: str = "STAS Model Patch"  # names the node in the console
    model_blocks: int = 0            # blocks in the model (the shape of the op's block map); 0: up to the last steered
    key: str = WRAPPER_KEY + ".0"  # set by ``install`` (see ``stable_key``)
    _dev: Dict[Any, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # Host-side constant of the hot path, computed once: the block's row in the channel tables.
        self._pos: Dict[int, int] = {ref.flat: i for i, ref in enumerate(self.blocks)}

    # -- small per-device tensors, built once (in the APPLY_MODEL wrapper, never while compiled)
    def on_device(self, key: Any, make, device: torch.device) -> Any:
        """``make(device)``, cached per (key, device)."""
        k = (key, device)
        t = self._dev.get(k)
        if t is None:
            t = make(device)
            self._dev[k] = t  # dict assignment is atomic: concurrent callers at worst build it twice
        return t

    @property
    def n_flat(self) -> int:
        return max(self.model_blocks, 1 + max((ref.flat for ref in self.blocks), default=-1))

    def block_rows(self) -> torch.Tensor:
        """int64 CPU [n_flat]: each block's row in the tables, -1 where this plan does not steer it
        (read by the op of a compiled graph, which may hold patches of another block set)."""
        def make(_):
            rows = torch.full((self.n_flat,), -1, dtype=torch.long)
            for flat, i in self._pos.items():
                rows[flat] = i
            return rows
        return self.on_device(("block_rows",), make, torch.device("cpu"))

    def fixed_channels(self, ref: BlockRef) -> Optional[Tuple[int, ...]]:
        if self.profile is not None:
            return self.profile.channels_for(ref.flat)
        return self.channels.explicit

    @property
    def auto(self) -> bool:
        return self.profile is None and self.channels.explicit is None

    def token_idx(self, grid: Grid, device: torch.device) -> Tuple[torch.Tensor, int]:
        """(steered tokens of ``grid`` padded to one per video token, how many are real).  The
        padded length depends on the grid alone, so a compiled graph sees one input shape
        whatever the mask (inductor checks input shapes that ComfyUI's guard filter does not)."""
        def make(d):
            tok = steer_token_indices(tuple(grid), self.spec)
            n_vis = grid[0] * grid[1] * grid[2]
            return torch.cat([tok, tok.new_zeros(n_vis - tok.numel())]).to(d), tok.numel()
        return self.on_device(("tok", tuple(grid)), make, device)

    def row_lam(self, batch: int, picked: Tuple[int, ...], device: torch.device) -> torch.Tensor:
        """float32 [batch]: the blend of each row of this call (0 where its CFG chunk is not steered)."""
        def make(d):
            lam = [0.0] * batch
            for r in picked:
                lam[r] = float(self.lam)
            return torch.tensor(lam, dtype=torch.float32).to(d)
        return self.on_device(("lam", batch, picked), make, device)

    def fixed_tables(self, device: torch.device) -> "ChannelTables":
        """Channel tables of explicit or profile channels (one row per steered block)."""
        def make(d):
            per = [tuple(self.fixed_channels(ref) or ()) for ref in self.blocks]
            chans = torch.zeros(len(per), MAX_CHANNELS, dtype=torch.long)
            valid = torch.zeros(len(per), MAX_CHANNELS, dtype=torch.bool)
            for i, c in enumerate(per):
                chans[i, :len(c)] = torch.tensor(c, dtype=torch.long)
                valid[i, :len(c)] = True
            return ChannelTables(chans.to(d), valid.to(d), torch.zeros(len(per), dtype=torch.int32).to(d), False,
                                 max(1, max(len(c) for c in per)))
        return self.on_device(("fixed",), make, device)

    def n_chans(self) -> int:
        """Channels per block in this plan's tables (the kernels read that many columns)."""
        return min(self.channels.top_k, self.hidden_size)

    def params(self, run: "RunState", tables: "ChannelTables", prefix: int, grid: Grid, n_tok: int) -> torch.Tensor:
        """This call's StepParams, packed (a CPU tensor: what a compiled graph must not bake in)."""
        lo, hi = run.bounds
        return StepParams(self.alpha, lo, hi, self.channels.threshold, tables.detect, prefix,
                          grid[0] * grid[1] * grid[2], n_tok, tables.n_chans).pack()

    # -- the hot path -----------------------------------------------------------------
    def steer_block(self, h: torch.Tensor, ref: BlockRef, ctx: "CallContext", transformer_options) -> None:
        """Steer block ``ref``'s output ``h`` in place for this call.

        While compiled, everything read here is either fixed for the patched model (family,
        block row, the block's token offset derived in the traced frame) or a tensor of
        ``ctx.call``: which rows are steered (CFG chunk, sigma window), the settings, the
        geometry and whether channels still have to be detected are decided by the op.
        """
        if not (ctx.active or compiling()):  # eager: no row of this call is ever steered
            return
        pos = self._pos[ref.flat]
        offset = self.family.visual_start(ref.kind, transformer_options, 0)
        observers = transformer_options.get(STEER_OBSERVERS)  # an MA Recorder recording this call, else None
        if observers and not compiling():
            self._steer_observed(observers, h, ref, ctx, pos, offset)
            return
        steer_block(h, ctx.call, pos, offset, ref.flat)

    def _steer_observed(self, observers, h, ref, ctx, pos, offset) -> None:
        """Eager path of a recorded call: observers see the values before and after steering.
        The recorder reads sigma on the host in the calls it records, so this may too."""
        call = ctx.call
        p = StepParams.unpack(call.params)
        start = offset + p.prefix
        detect_block_(h, call, pos, offset)
        steered = ctx.run.window.contains(float(call.sigma.reshape(-1)[0]))
        seen = (ref, h, start, ctx.grid, call.token_idx[:p.n_tok], call.chans[pos, :p.n_chans],
                call.valid[pos, :p.n_chans], ctx.rows)
        if steered:
            for o in observers:
                o.stas_steer("before", *seen)
        steer_only_(h, call, pos, offset)
        if steered:
            for o in observers:
                o.stas_steer("after", *seen)


@dataclass(frozen=True)
class ChannelTables:
    """Channels of every steered block on one device: chans int64 / valid bool [n_blocks, K]
    and need int32 [n_blocks] (1 until the block's channels are detected; auto mode only)."""

    chans: torch.Tensor
    valid: torch.Tensor
    need: torch.Tensor
    detect: bool
    n_chans: int  # columns in use (the tables have MAX_CHANNELS, one shape whatever the settings)

    def __deepcopy__(self, memo):
        return self


class RunState:
    """State of one sampling run: its sigma window and guider passes, and per device the channel
    tables that auto detection fills at the first steered call of each block (on the device, see
    ``ChannelTables``)."""

    def __init__(self, window: SigmaWindow, passes: GuiderPasses = DEFAULT, n_flat: int = 0) -> None:
        self._lock = threading.Lock()
        # int32 CPU [model blocks]: 1 where the op of a compiled graph ran for the block (eager runs leave it 0)
        self.op_ran = torch.zeros(n_flat, dtype=torch.int32)
        self.tables: Dict[torch.device, ChannelTables] = {}
        # The window in the sigmas of the model_sampling this run's sampler uses (a shift node placed
        # after STAS Model Patch replaces the one the node saw; each Wan 2.2 expert has its own).
        self.window = window
        self.bounds: Tuple[float, float] = window.bounds()
        self.passes = passes

    def __deepcopy__(self, memo):
        return self

    def tables_for(self, plan: StasPlan, device: torch.device) -> ChannelTables:
        got = self.tables.get(device)
        if got is None:
            with self._lock:
                got = self.tables.get(device)
                if got is None:
                    n = len(plan.blocks)
                    got = ChannelTables(torch.zeros(n, MAX_CHANNELS, dtype=torch.long, device=device),
                                        torch.zeros(n, MAX_CHANNELS, dtype=torch.bool, device=device),
                                        torch.ones(n, dtype=torch.int32, device=device), True, plan.n_chans())
                    self.tables[device] = got
        return got


@dataclass
class CallContext:
    """What one model call tells the block hooks (lives in that call's transformer_options).

    The host-side fields serve the eager paths only (a compiled graph keeps the values of the
    call it was traced in); what the op needs reaches it through ``call``'s tensors, so a
    compiled graph that reads them stays right when settings, window, mask or grid change."""

    grid: Grid
    prefix: int
    rows: Optional[Tuple[int, ...]]  # picked rows; None: every row
    active: bool                     # some row's CFG chunk is steered (the window is checked on the device)
    run: RunState
    diffusion_model: Any
    call: SteerCall                  # tables, tokens, row blends, sigma and packed settings of this call
    steer = True  # block patches hand every STAS call to StasPlan.steer_block, which decides on the device

    def __deepcopy__(self, memo):
        return self


class ApplyModelWrapper(Shared):
    def __init__(self, plan: StasPlan):
        self.plan = plan

    def __call__(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        # Every call gets a context, steered or not: a compiled diffusion model (whose guards on
        # transformer_options ComfyUI's TorchCompileModel filters out) must find the same keys in
        # every call.  Nothing here reads a tensor value, so there is no host synchronisation.
        plan = self.plan
        dm = executor.class_obj.diffusion_model
        dev = x.device
        run = transformer_options.get(plan.key + ".run")
        if run is None:  # called outside a sampler run: detection covers this call alone
            run = RunState(plan.window, n_flat=plan.n_flat)
        steered = run.passes.indices(plan.apply_to, executor.class_obj)
        picked = cond_rows(transformer_options.get("cond_or_uncond"), x.shape[0], steered)
        grid = plan.family.grid(dm, tuple(x.shape))
        prefix = plan.family.prefix_tokens(dm, kwargs)
        tables = run.tables_for(plan, dev) if plan.auto else plan.fixed_tables(dev)
        token_idx, n_tok = plan.token_idx(grid, dev)
        call = SteerCall(tables.chans, tables.valid, tables.need, token_idx, plan.row_lam(x.shape[0], picked, dev),
                         t if t.device == dev else t.to(dev), plan.params(run, tables, prefix, grid, n_tok),
                         plan.block_rows(), run.op_ran)
        ctx = CallContext(grid=grid, prefix=prefix, rows=None if len(picked) == x.shape[0] else picked,
                          active=len(picked) > 0, run=run, diffusion_model=dm, call=call)
        transformer_options = {**transformer_options, plan.key: ctx}
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)


class OuterSampleWrapper(Shared):
    """Validates the latent before step one and scopes a RunState to one sampling run."""

    def __init__(self, plan: StasPlan, validate_latent):
        self.plan = plan
        self.validate_latent = validate_latent

    def __call__(self, executor, *args, **kwargs):
        import comfy.model_patcher

        guider = executor.class_obj
        noise = args[0] if args else kwargs.get("noise")
        sigmas = args[3] if len(args) > 3 else kwargs.get("sigmas")
        self.validate_latent(self.plan, guider.model_patcher.model.diffusion_model, tuple(noise.shape))
        run = RunState(self.plan.window.for_model(guider.model_patcher.get_model_object("model_sampling")),
                       passes_of(guider), self.plan.n_flat)
        self.preflight(run, sigmas)
        orig = guider.model_options
        try:
            guider.model_options = comfy.model_patcher.create_model_options_clone(orig)
            guider.model_options["transformer_options"][self.plan.key + ".run"] = run
            out = executor(*args, **kwargs)
            self.report_detection(run)
            self.report_compiled_blocks(run)
            return out
        finally:
            guider.model_options = orig

    def preflight(self, run: RunState, sigmas) -> None:
        """Before step one: refuse a run whose steered passes the guider never computes, and say in
        one console line when this node will steer nothing in this run, or only in part, and why."""
        plan, passes = self.plan, run.passes
        s = [float(v) for v in sigmas] if sigmas is not None else []  # one host read per run
        n = max(0, len(s) - 1)
        k = run.window.steps_in(s) if n else 0
        nothing, unsure, part = [], [], []
        if n and not k:
            nothing.append(f"none of this run's {n} steps (sigma {s[0]:.4g} to {s[n - 1]:.4g}) lies in its window "
                           f"{run.window.describe()}")
        elif n and run.window.starts_inside(s[0]):
            part.append(f"it steers {k} of {n} steps: this run starts at sigma {s[0]:.4g}, inside the window "
                        f"{run.window.describe()} (denoise < 1, or the later stage of split steps), so the "
                        "window's first steps are not in it")
        empty = [ref.flat for ref in plan.blocks if not plan.auto and not plan.fixed_channels(ref)]
        if k and empty:
            (nothing if len(empty) == len(plan.blocks) else part).append(
                f"the profile lists no channel for block(s) {empty}, so nothing is steered there")
        roles = set(passes.roles) | ({NEGATIVE} if passes.negative_model is not None else set())
        wanted = plan.apply_to & roles
        if not passes.known:
            if plan.apply_to != ALL_ROLES:
                unsure.append(f"the guider {passes.name} is not one STAS knows, so it steers the pass ComfyUI "
                              f"numbers {'first' if plan.apply_to == {POSITIVE} else 'second'} (the "
                              f"{_apply_to_name(plan)} pass of KSampler), which may be another prompt for this "
                              "guider; set apply_to to 'both' to steer every pass")
        elif passes.ambiguous:
            unsure.append(f"{passes.name} runs its negative pass on the same model as the positive one, so STAS cannot "
                          "tell them apart and steers both passes with apply_to 'cond' or 'both', none with 'uncond'; "
                          "load model_negative with its own loader, or use CFGGuider")
        elif k and not (wanted & passes.runs):
            if plan.apply_to == {NEGATIVE}:
                raise ValueError(
                    f"STAS Model Patch: apply_to is 'uncond', but this sampler ({passes.name}) runs no negative "
                    "(uncond) pass (cfg is 1.0, or there is no negative conditioning), so STAS would steer nothing. "
                    "Set apply_to to 'cond' or 'both', or use cfg above 1.")
            raise ValueError(
                f"STAS Model Patch: apply_to is '{_apply_to_name(plan)}', but this sampler ({passes.name}) runs none "
                "of those passes, so STAS would steer nothing. Set apply_to to 'both'.")
        elif k and wanted - passes.runs:
            part.append(f"{passes.name} skips the {' and '.join(sorted(wanted - passes.runs))} pass of apply_to "
                        f"'{_apply_to_name(plan)}' in this run (cfg 1.0, or no such conditioning), so only "
                        f"the {' and '.join(sorted(wanted & passes.runs))} pass is steered")
        if nothing:
            log.warning("%s will steer nothing in this run: %s.", plan.label, "; ".join(nothing + unsure + part))
        elif unsure:
            log.warning("%s may not steer the pass you mean in this run: %s.", plan.label, "; ".join(unsure + part))
        elif part:
            log.info("%s will steer only in part in this run: %s.", plan.label, "; ".join(part))

    def report_detection(self, run: RunState) -> None:
        """After a run with auto channels, log which channels detection chose, and warn when a
        steered block found no channel above the threshold: the kernels then leave it untouched,
        which must not pass silently. One host read per run, after the last step (never on the
        hot path)."""
        if not self.plan.auto:
            return
        silent, steered, chans = set(), set(), set()
        for tables in list(run.tables.values()):
            done = (tables.need == 0).cpu()
            valid = tables.valid.cpu()
            found = valid.any(dim=1)
            silent.update(self.plan.blocks[i].flat for i in range(len(self.plan.blocks)) if done[i] and not found[i])
            steered.update(self.plan.blocks[i].flat for i in range(len(self.plan.blocks)) if found[i])
            chans.update(tables.chans.cpu()[valid].tolist())
        if steered:  # what auto detection chose, in the console, as a user would want to know
            log.info("STAS Model Patch: auto detection steered channel(s) %s at %d block(s)",
                     sorted(chans), len(steered))
        if silent:
            log.warning(
                "STAS Model Patch: at block(s) %s no channel reached the threshold %g, so nothing was steered "
                "there. Lower 'threshold', list channels explicitly, or look at the MA Visualizer's summary.",
                sorted(silent), self.plan.channels.threshold)

    def report_compiled_blocks(self, run: RunState) -> None:
        """After a run, warn about plan blocks a compiled graph never steered.  A graph traced
        with another block set (TorchCompileModel's guard filter keeps it) calls the op only at
        the blocks patched then; the op leaves those the plan dropped untouched and marks each
        one it ran for.  Eager runs never call the op, so nothing is marked and nothing said."""
        ran = run.op_ran
        if not bool(ran.any()):
            return
        seen = set(ran.nonzero().flatten().tolist())
        steered = {ref.flat for ref in self.plan.blocks}
        missed = sorted(steered - seen)
        if not missed:
            return
        stale = sorted(seen - steered)
        log.warning(
            "%s: block(s) %s were never steered in this run. The model is compiled by TorchCompileModel and its "
            "graph was traced with another block set%s, which ComfyUI keeps. Re-run with the old blocks, or make "
            "TorchCompileModel compile anew (change one of its inputs and back).",
            self.plan.label, missed,
            f" (block(s) {stale}, left untouched now)" if stale else "")


def _apply_to_name(plan: StasPlan) -> str:
    return {frozenset({POSITIVE}): "cond", frozenset({NEGATIVE}): "uncond"}.get(plan.apply_to, "both")


def install(model, plan: StasPlan, validate_latent):
    """Return a clone of ``model`` (a ModelPatcher) with ``plan`` installed; ``model`` is untouched."""
    import comfy.patcher_extension as pe

    plan.key = stable_key(model, WRAPPER_KEY)
    m = model.clone()
    chain_block_patches(m, plan)
    m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, plan.key, ApplyModelWrapper(plan))
    m.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, plan.key, OuterSampleWrapper(plan, validate_latent))
    return m
