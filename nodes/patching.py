"""What STAS Model Patch installs on a MODEL clone: ``StasPlan`` (the settings and the STAS side
of the shared stack in ``hooks.py``), a ``RunState`` per sampling run and a ``CallContext`` per
model call. docs/architecture.md follows a block call from here to the kernel.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, FrozenSet, Optional, Tuple

import torch

from ..stas_core.channels import MAX_CHANNELS, ChannelSelection
from ..stas_core.layout import BoundarySpec, Grid, steer_token_indices
from ..stas_core.profile import MAProfile
from ..stas_core.schedule import SigmaWindow
from ..stas_core.shard import steer_shard_
from ..stas_core.shared import PerDevice, Shared
from ..stas_core.steer_fast import (Backend, BlockView, SteerCall, StepParams, backend_for, check_params, compiling,
                                    device_guard, steer_traced_, view_of)
from . import compile_breaks
from .families import BlockRef
from .guiders import (ALL_ROLES, DEFAULT, NEGATIVE, POSITIVE, GuiderPasses, StepCache, cache_of, passes_of,
                      prompt_name, skipped_steps, steered_samples)
from .hooks import STEER_OBSERVERS, Plan

log = logging.getLogger("comfyui-stas")
FEW_STEPS = 8
"""Runs of at most this many steps (step-distilled graphs) get a console line naming the steps STAS steers."""


@dataclass(eq=False)
class StasPlan(Plan):
    spec: BoundarySpec
    channels: ChannelSelection
    alpha: float
    blend: float
    window: SigmaWindow
    apply_to: FrozenSet[str]         # roles of guiders.py: positive / negative / other
    hidden_size: int
    profile: Optional[MAProfile] = None
    label: str = "STAS Model Patch"  # names the node in the console
    shard: Optional[Any] = None      # sequence parallel: callable giving this rank's stas_core.shard.Shard or None
    _dev: PerDevice = field(default_factory=PerDevice, repr=False)
    detected: Dict[int, Tuple[int, ...]] = field(default_factory=dict, repr=False)  # auto: the last run's channels per block
    node_name: ClassVar[str] = "STAS Model Patch"

    def __post_init__(self) -> None:
        self._slot: Dict[int, int] = {ref.flat: i for i, ref in enumerate(self.blocks)}  # block -> slot in the tables

    def fixed_channels(self, ref: BlockRef) -> Optional[Tuple[int, ...]]:
        if self.profile is not None:
            return self.profile.channels_for(ref.flat)
        return self.channels.explicit

    @property
    def auto(self) -> bool:
        return self.profile is None and self.channels.explicit is None

    def token_idx(self, grid: Grid, device: torch.device) -> Tuple[torch.Tensor, int]:
        """(steered tokens of ``grid`` padded to one per video token, how many are real): one shape
        per grid whatever the mask, as a compiled graph needs."""
        def make(d):
            tok = steer_token_indices(tuple(grid), self.spec)
            n_vis = grid[0] * grid[1] * grid[2]
            return torch.cat([tok, tok.new_zeros(n_vis - tok.numel())]).to(d), tok.numel()
        return self._dev.get(("tok", tuple(grid)), device, make)

    def sample_blend(self, batch: int, picked: Tuple[int, ...], device: torch.device) -> torch.Tensor:
        """float32 [batch]: the blend of each sample of this call (0 where its pass is not steered)."""
        def make(d):
            w = [0.0] * batch
            for r in picked:
                w[r] = float(self.blend)
            return torch.tensor(w, dtype=torch.float32).to(d)
        return self._dev.get(("blend", batch, picked), device, make)

    def fixed_tables(self, device: torch.device) -> "ChannelTables":
        """Channel tables of explicit or profile channels (one slot per steered block)."""
        def make(d):
            per = [tuple(self.fixed_channels(ref) or ()) for ref in self.blocks]
            chans = torch.zeros(len(per), MAX_CHANNELS, dtype=torch.long)
            valid = torch.zeros(len(per), MAX_CHANNELS, dtype=torch.bool)
            for i, c in enumerate(per):
                chans[i, :len(c)] = torch.tensor(c, dtype=torch.long)
                valid[i, :len(c)] = True
            return ChannelTables(chans.to(d), valid.to(d), torch.zeros(len(per), dtype=torch.int32).to(d), False,
                                 max(1, max(len(c) for c in per)))
        return self._dev.get("fixed", device, make)

    def n_chans(self) -> int:
        """Channels per block in this plan's tables (the kernels read that many columns)."""
        return min(self.channels.top_k, self.hidden_size)

    # -- one run (hooks.OuterSample) ----------------------------------------------------------
    def validate_latent(self, dm, shape) -> None:
        super().validate_latent(dm, shape)
        grid = self.family.grid(dm, shape)
        if self.spec.is_empty_for(grid):
            raise ValueError(f"STAS Model Patch: the mask ({self.spec.describe()}) selects no token of this "
                             f"{grid[0]}x{grid[1]}x{grid[2]} latent grid (boundaries need at least two latent "
                             "frames). Turn on first_frame in the Boundary Mask Builder or render more frames.")

    def start_run(self, guider, dm, shape, sigmas) -> "RunState":
        run = RunState(self.window.for_model(guider.model_patcher.get_model_object("model_sampling")),
                       passes_of(guider), cache_of(guider))
        self.preflight(run, sigmas)
        run.uncompiled = compile_breaks.start_run(self, guider.model_patcher)  # torch.compile, graph break in blocks
        return run

    def finish_run(self, run: "RunState", out) -> None:
        self.report_detection(run)
        self.report_cache(run)

    # -- one model call (hooks.ApplyModel) ------------------------------------------------------
    def call_context(self, run, model, x, t, transformer_options, kwargs) -> "CallContext":
        # Every call gets a context, steered or not: a compiled model (whose guards on
        # transformer_options ComfyUI filters out) must find the same keys in every call.
        dm = model.diffusion_model
        dev = x.device
        if run is None:  # called outside a sampler run: detection covers this call alone
            run = RunState(self.window)
        picked = steered_samples(transformer_options.get("cond_or_uncond"), x.shape[0],
                                 run.passes.indices(self.apply_to, model))
        grid = self.family.grid(dm, tuple(x.shape), kwargs)
        prefix = self.family.video_prefix(dm, kwargs, grid)
        tables = run.tables_for(self, dev) if self.auto else self.fixed_tables(dev)
        token_idx, n_tok = self.token_idx(grid, dev)
        lo, hi = run.bounds
        shard = self.shard() if self.shard is not None else None  # sequence parallel (docs/multigpu.md)
        active = len(picked) > 0 and (shard is None or shard.in_window(t, lo, hi))
        detect = tables.detect and (run.detecting(dev) if shard is None else shard.detecting(run, active))
        p = StepParams(self.alpha, lo, hi, self.channels.threshold, detect, prefix,
                       grid[0] * grid[1] * grid[2], n_tok, tables.n_chans)
        call = SteerCall(tables.chans, tables.valid, tables.need, token_idx, self.sample_blend(x.shape[0], picked, dev),
                         t if t.device == dev else t.to(dev), p.pack())
        check_params(p, call)
        return CallContext(grid=grid, prefix=prefix, samples=None if len(picked) == x.shape[0] else picked,
                           active=active, run=run, diffusion_model=dm, call=call, p=p,
                           backend=backend_for(dev), device=dev, shard=shard)

    def call_guard(self, ctx, x):
        return compile_breaks.call_guard(getattr(getattr(ctx, "run", None), "uncompiled", False), device_guard(x))

    def after_call(self, ctx: "CallContext") -> None:
        if ctx.p.detect:
            ctx.run.watch(ctx.device)

    # -- one block call: the hot path ---------------------------------------------------------
    def on_block(self, h: torch.Tensor, ref: BlockRef, ctx: "CallContext", transformer_options) -> None:
        """Steer block ``ref``'s output ``h`` in place. While compiled, the op decides everything
        that may change between calls from ``ctx.call``'s tensors."""
        if ctx.shard is not None:  # sequence parallel: h is this rank's slice of the tokens
            if ctx.active:
                steer_shard_(h, ctx.shard, ctx.call, ctx.p, self._slot[ref.flat],
                             self.family.visual_start(ref.kind, transformer_options, 0), ctx.grid)
            return
        if compiling():
            steer_traced_(h, ctx.call, self._slot[ref.flat], self.family.visual_start(ref.kind, transformer_options, 0))
            return
        if not ctx.ran:  # the call's first patched block: this call was computed (a step cache may skip calls)
            ctx.ran = True
            if ctx.run.cache is not None:
                ctx.run.computed.append(ctx.call.sigma)
        if not ctx.active:  # no sample of this call is steered
            return
        v = view_of(h, ctx.call, ctx.p, self._slot[ref.flat], self.family.visual_start(ref.kind, transformer_options, 0))
        observers = transformer_options.get(STEER_OBSERVERS)  # an MA Recorder recording this call, else None
        if observers:
            self._steer_observed(observers, v, ref, ctx)
            return
        if ctx.p.detect:
            ctx.backend.detect_(v)
        ctx.backend.steer_(v)

    def _steer_observed(self, observers, v: BlockView, ref: BlockRef, ctx: "CallContext") -> None:
        """A recorded call: observers see the values before and after steering, and (a device bool,
        never read here) whether this call's sigma lies in the window."""
        p, call = v.p, v.call
        if p.detect:
            ctx.backend.detect_(v)
        s = call.sigma.reshape(-1)[0].float()
        seen = (ref, v.h, v.vis_start, ctx.grid, call.token_idx[:p.n_tok], call.chans[v.slot, :p.n_chans],
                call.valid[v.slot, :p.n_chans], ctx.samples, (s > p.lo) & (s <= p.hi))
        for o in observers:
            o.stas_steer("before", *seen)
        ctx.backend.steer_(v)
        for o in observers:
            o.stas_steer("after", *seen)

    # -- before and after a run ------------------------------------------------------------------
    def preflight(self, run: RunState, sigmas) -> None:
        """Before step one: refuse a run whose steered passes the guider never computes, and say in
        one console line when this node will steer nothing in this run, or only in part, and why."""
        s = [float(v) for v in sigmas] if sigmas is not None else []  # one host read per run
        run.sigmas = s
        n = max(0, len(s) - 1)
        k = run.window.steps_in(s) if n else 0
        self.refuse_unrun_passes(run.passes, k)
        nothing, unsure, part = self.run_notes(run, s, k)
        if nothing:
            log.warning("%s will steer nothing in this run: %s.", self.label, "; ".join(nothing + unsure + part))
        elif unsure:
            log.warning("%s may not steer the pass you mean in this run: %s.", self.label, "; ".join(unsure + part))
        elif part:
            log.info("%s will steer only in part in this run: %s.", self.label, "; ".join(part))
        if 0 < k < n <= FEW_STEPS and not nothing:  # distilled graphs: which of so few steps (docs/compatibility.md)
            log.info("%s steers step(s) %s of %d (window %s).", self.label,
                     ", ".join(str(i + 1) for i in range(n) if run.window.contains(s[i])), n, run.window.describe())

    def _wanted(self, passes: GuiderPasses):
        roles = set(passes.roles) | ({NEGATIVE} if passes.negative_model is not None else set())
        return self.apply_to & roles

    def refuse_unrun_passes(self, passes: GuiderPasses, k: int) -> None:
        """A ValueError when the run steers some step but its guider runs none of the passes apply_to names."""
        if not passes.known or passes.ambiguous or not k or self._wanted(passes) & passes.runs:
            return
        if self.apply_to == {NEGATIVE}:
            raise ValueError(
                f"STAS Model Patch: apply_to is 'uncond', but this sampler ({passes.name}) runs no negative "
                "(uncond) pass (cfg is 1.0, or there is no negative conditioning), so STAS would steer nothing. "
                "Set apply_to to 'cond' or 'both', or use cfg above 1.")
        raise ValueError(
            f"STAS Model Patch: apply_to is '{prompt_name(self.apply_to)}', but this sampler ({passes.name}) runs none "
            "of those passes, so STAS would steer nothing. Set apply_to to 'both'.")

    def run_notes(self, run: RunState, s, k: int):
        """(nothing, unsure, part): why this run steers nothing, maybe not the pass meant, or only in part."""
        passes, n = run.passes, max(0, len(s) - 1)
        nothing, unsure, part = [], [], []
        if n and not k:
            nothing.append(f"none of this run's {n} steps (sigma {s[0]:.4g} to {s[n - 1]:.4g}) lies in its window "
                           f"{run.window.describe()}")
        elif n and run.window.starts_inside(s[0]):
            part.append(f"it steers {k} of {n} steps: this run starts at sigma {s[0]:.4g}, inside the window "
                        f"{run.window.describe()} (denoise < 1, or the later stage of split steps), so the "
                        "window's first steps are not in it")
        cache = run.cache
        may = [i + 1 for i in range(n) if run.window.contains(s[i]) and cache.may_skip(s[i])] if cache and k else []
        if may:
            part.append(f"{cache.describe()} may skip steered step(s) {', '.join(map(str, may))} of {n}; a step it "
                        "skips runs no block, so STAS steers nothing in it (which it skipped is said after the run)")
        empty = [ref.flat for ref in self.blocks if not self.auto and not self.fixed_channels(ref)]
        if k and empty:
            (nothing if len(empty) == len(self.blocks) else part).append(
                f"the profile lists no channel for block(s) {empty}, so nothing is steered there")
        wanted = self._wanted(passes)
        if not passes.known:
            if self.apply_to != ALL_ROLES:
                unsure.append(f"the guider {passes.name} is not one STAS knows, so it steers the pass ComfyUI "
                              f"numbers {'first' if self.apply_to == {POSITIVE} else 'second'} (the "
                              f"{prompt_name(self.apply_to)} pass of KSampler), which may be another prompt for this "
                              "guider; set apply_to to 'both' to steer every pass")
        elif passes.ambiguous:
            unsure.append(f"{passes.name} runs its negative pass on the same model as the positive one, so STAS cannot "
                          "tell them apart and steers both passes with apply_to 'cond' or 'both', none with 'uncond'; "
                          "load model_negative with its own loader, or use CFGGuider")
        elif k and wanted - passes.runs and wanted & passes.runs:
            part.append(f"{passes.name} skips the {' and '.join(sorted(wanted - passes.runs))} pass of apply_to "
                        f"'{prompt_name(self.apply_to)}' in this run (cfg 1.0, or no such conditioning), so only "
                        f"the {' and '.join(sorted(wanted & passes.runs))} pass is steered")
        return nothing, unsure, part

    def report_detection(self, run: RunState) -> None:
        """After a run with auto channels, log which channels detection chose, and warn when a
        steered block found no channel above the threshold: the kernels then leave it untouched,
        which must not pass silently. One host read per run, after the last step (never on the
        hot path)."""
        if not self.auto:
            return
        silent, per_block = set(), {}
        for tables in list(run.tables.built.values()):
            done, valid, chans = (tables.need == 0).cpu(), tables.valid.cpu(), tables.chans.cpu()
            for i, ref in enumerate(self.blocks):
                if done[i] and not valid[i].any():
                    silent.add(ref.flat)
                per_block.setdefault(ref.flat, set()).update(chans[i][valid[i]].tolist())
        self.detected = {b: tuple(sorted(c)) for b, c in per_block.items() if c}
        if self.detected:  # what auto detection chose, in the console, as a user would want to know
            log.info("STAS Model Patch: auto detection steered channel(s) %s at %d block(s)",
                     sorted(set().union(*self.detected.values())), len(self.detected))
        if silent:
            log.warning(
                "STAS Model Patch: at block(s) %s no channel reached the threshold %g, so nothing was steered "
                "there. Lower 'threshold', list channels explicitly, or look at the MA Visualizer's summary.",
                sorted(silent), self.channels.threshold)

    def report_cache(self, run: RunState) -> None:
        """After a run beside a step cache: say which steered steps it skipped (one host read per run)."""
        cache, s, computed = run.cache, run.sigmas, run.computed
        run.computed = []
        steered = [i for i in range(max(0, len(s) - 1)) if run.window.contains(s[i])]
        if cache is None or cache.compiled or not steered:
            return
        skipped = skipped_steps(s, steered, [float(t.reshape(-1)[0]) for t in computed])
        if skipped:
            log.info("%s: %s skipped steered step(s) %s of %d, so STAS steered %d of the %d steps of its window.",
                     self.label, cache.name, ", ".join(str(i + 1) for i in skipped), len(s) - 1,
                     len(steered) - len(skipped), len(steered))
        else:
            log.info("%s: %s skipped none of the %d steered steps.", self.label, cache.name, len(steered))


@dataclass(frozen=True)
class ChannelTables(Shared):
    """Channels of every steered block on one device: chans int64 / valid bool [slots, K] and
    need int32 [slots] (1 until the block's channels are detected; auto mode only)."""

    chans: torch.Tensor
    valid: torch.Tensor
    need: torch.Tensor
    detect: bool
    n_chans: int  # columns in use (the tables have MAX_CHANNELS, one shape whatever the settings)


class RunState(Shared):
    """One sampling run: its sigma window and guider passes, and per device the channel tables
    that auto detection fills at the first steered call of each block."""

    def __init__(self, window: SigmaWindow, passes: GuiderPasses = DEFAULT, cache: Optional[StepCache] = None) -> None:
        self.tables = PerDevice()  # "tables" -> ChannelTables, per device
        # The window in the sigmas of the model_sampling this run's sampler uses (a shift node placed
        # after STAS Model Patch replaces the one the node saw; each Wan 2.2 expert has its own).
        self.window = window
        self.bounds: Tuple[float, float] = window.bounds()
        self.passes = passes
        self.cache = cache                 # guiders.StepCache: EasyCache / LazyCache in this run, or None
        self.sigmas: list = []             # the run's sigmas (host floats, read once in preflight)
        self.computed: list = []           # with a cache: the sigma (device tensor) of each call that ran a block
        self._detected: set = set()        # devices where every block's channels are known to be detected
        self._need_copy: Dict[torch.device, Tuple[torch.Tensor, Any]] = {}  # pinned copy of need, its event
        self.uncompiled = False            # a compiled model samples uncompiled in this run (compile_breaks)

    def tables_for(self, plan: StasPlan, device: torch.device) -> ChannelTables:
        def make(d):
            n = len(plan.blocks)
            return ChannelTables(torch.zeros(n, MAX_CHANNELS, dtype=torch.long, device=d),
                                 torch.zeros(n, MAX_CHANNELS, dtype=torch.bool, device=d),
                                 torch.ones(n, dtype=torch.int32, device=d), True, plan.n_chans())
        return self.tables.get("tables", device, make)

    def detecting(self, device: torch.device) -> bool:
        """False once the host has seen every ``need`` flag of ``device`` cleared (read from a copy
        made after an earlier call, never waited for); the detection kernels are then not launched."""
        if device in self._detected:
            return False
        tables = self.tables.peek("tables", device)
        if tables is None:
            return True
        if device.type == "cuda":
            copy = self._need_copy.get(device)
            if copy is None or not copy[1].query():
                return True
            need = copy[0]
        else:
            need = tables.need
        if bool(need.any()):
            return True
        self._detected.add(device)
        return False

    def watch(self, device: torch.device) -> None:
        """After a detecting call on a GPU: copy the ``need`` flags to the host asynchronously."""
        if device.type != "cuda" or device in self._detected:
            return
        copy = self._need_copy.get(device)
        if copy is not None and not copy[1].query():
            return  # the last copy is still on its way
        need = self.tables.peek("tables", device).need
        with torch.cuda.device(device):
            if copy is None:
                copy = self._need_copy[device] = (torch.empty(need.shape, dtype=need.dtype).pin_memory(),
                                                  torch.cuda.Event())
            copy[0].copy_(need, non_blocking=True)
            copy[1].record()


@dataclass
class CallContext(Shared):
    """What one model call tells the block hooks (in that call's transformer_options). The host
    fields serve the eager path; a compiled graph reads only ``call``'s tensors."""

    grid: Grid
    prefix: int
    samples: Optional[Tuple[int, ...]]  # steered samples of the batch; None: all
    active: bool                        # some sample's pass is steered (the window is checked on the device)
    run: RunState
    diffusion_model: Any
    call: SteerCall                     # tables, tokens, blends, sigma and packed settings of this call
    p: StepParams                       # the same settings, unpacked
    backend: Backend
    device: torch.device
    shard: Any = None                   # this rank's stas_core.shard.Shard under sequence parallelism
    ran: bool = False                   # a patched block ran in this call (eager path; a step cache may skip calls)
    calls_plan = True                   # the block patches hand this call to the plan (hooks.IdleCall: False)

