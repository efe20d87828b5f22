"""What the MA Recorder installs on a MODEL clone: ``RecorderPlan`` (the recorder side of the
shared stack in ``hooks.py``), one ``RunRecording`` per run and a ``RecCall`` per recorded model
call, copied to the host asynchronously after the call (``InFlight``). A failure never stops the sampler.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Tuple

import torch

from ..stas_core.channels import detect_ma_channels
from ..stas_core.record import (PROMPT_NAMES, Recording, RunLayout, RunRecording, channel_stats, describe_bytes,
                                fingerprint, kept_rows_cols, pack_flat, parse_steps, stride_for, unpack_flat)
from ..stas_core.shared import PerDevice, Shared
from . import compile_breaks
from .families import BlockRef
from .guiders import PROMPTS, cache_of, pass_samples, passes_of
from .hooks import STEER_OBSERVERS, WRAPPER_KEY, Plan


RECORDER_KEY = WRAPPER_KEY + ".recorder"
log = logging.getLogger("comfyui-stas")


@dataclass(eq=False)
class RecorderPlan(Plan):
    steps_text: str
    prompts: Tuple[int, ...]
    channels: Optional[Tuple[int, ...]]
    top_k: int
    token_stride: int
    budget_bytes: int
    hidden_size: int
    n_blocks: int
    recording: Recording
    label: ClassVar[str] = "MA Recorder"
    node_name: ClassVar[str] = "MA Recorder"
    key_prefix: ClassVar[str] = RECORDER_KEY
    video_only: ClassVar[str] = "The MA Recorder records video models"

    @property
    def block_set(self) -> frozenset:
        return frozenset(r.flat for r in self.blocks)

    def on_block(self, h: torch.Tensor, ref: BlockRef, call: "RecCall", transformer_options) -> None:
        call.record_block(h, ref, transformer_options)

    # -- one run (hooks.OuterSample) --------------------------------------------------------
    def start_run(self, guider, dm, shape: Tuple[int, ...], sigmas: torch.Tensor) -> RunRecording:
        """A RunRecording sized for this run, or a ValueError (before step 1) naming the fix."""
        model_patcher = guider.model_patcher
        grid = self.family.grid(dm, shape, _first_cond(guider))   # LTX guide frames are not frames of the video
        sig = [float(s) for s in sigmas.reshape(-1).tolist()]  # one read per run
        n_steps = len(sig) - 1
        steps = parse_steps(self.steps_text, n_steps)
        if not steps:
            raise ValueError(f"MA Recorder: steps {self.steps_text!r} selects no step of this {n_steps}-step run "
                             f"(valid 0-{n_steps - 1}, -1 = last, or 'all'). Change 'steps' on the MA Recorder.")
        stride = stride_for(grid, self.token_stride)
        rows, cols = kept_rows_cols(grid[1], grid[2], stride)
        cfg = getattr(getattr(model_patcher, "model", None), "model_config", None)
        layout = RunLayout(
            family=self.family.name, model=type(cfg).__name__ if cfg is not None else type(dm).__name__,
            hidden_size=self.hidden_size, n_blocks=self.n_blocks, latent_shape=tuple(int(s) for s in shape),
            grid=tuple(int(g) for g in grid), sigmas=tuple(sig), steps=tuple(steps),
            blocks=tuple(r.flat for r in self.blocks), prompts=self.prompts, batch=int(shape[0]), stride=stride,
            rows=rows, cols=cols, top_k=self.top_k, explicit_channels=self.channels)
        need = layout.estimate_bytes()
        if need > self.budget_bytes:
            raise ValueError(
                f"MA Recorder: recording {len(layout.blocks)} block(s) x {len(steps)} step(s) x "
                f"{len(self.prompts)} prompt(s) of this {grid[0]}x{grid[1]}x{grid[2]}-token latent (batch {shape[0]}) needs "
                f"about {describe_bytes(need)}, over max_memory_mb ({describe_bytes(self.budget_bytes)}). Record fewer "
                "blocks or steps, raise token_stride, or raise max_memory_mb.")
        self.recording.make_room(need)
        run = RunRecording(layout, budget_bytes=max(need, self.recording.remaining()))
        run.passes = passes_of(guider)
        run.cache = cache_of(guider)   # EasyCache / LazyCache: the steps it skips run no block, so are not recorded
        run.inflight = InFlight()
        run.channels_on = PerDevice()  # block -> auto channels on each device
        return run

    def end_run(self, run: RunRecording) -> None:
        run.inflight.drain()
        run.channels_on = PerDevice()
        run.release_device()

    def finish_run(self, run: RunRecording, out) -> None:
        run.fingerprint = fingerprint(out)
        self.recording.add(run)
        if run.notes:
            log.warning("comfyui-stas MA Recorder: %s", "; ".join(f"{k} ({v}x)" for k, v in run.notes.items()))
        missing = sorted(set(run.layout.steps) - set(run.recorded_steps()))
        if run.cache is not None and missing and not run.failed:
            log.info("comfyui-stas MA Recorder: %s skipped step(s) %s (numbered from 0), which ran no block, so they "
                     "are not recorded.", run.cache.name, ", ".join(map(str, missing)))

    # -- one model call (hooks.ApplyModel) ------------------------------------------------------
    def call_context(self, run, model, x, t, to, kwargs):
        return self._call(run, x, t, model, to, kwargs) if run is not None and not run.failed else None

    def call_guard(self, ctx, x):
        # A recorded call runs uncompiled (its bookkeeping is Python, which a compiled graph would
        # not replay): under TorchCompileModel, the recorded values are the eager ones.
        return compile_breaks.eager()

    def call_options(self, transformer_options: dict, ctx) -> dict:
        if not isinstance(ctx, RecCall):
            return super().call_options(transformer_options, ctx)
        observers = tuple(transformer_options.get(STEER_OBSERVERS) or ()) + (ctx,)
        return {**transformer_options, self.key: ctx, STEER_OBSERVERS: observers}

    def after_call(self, ctx) -> None:
        if isinstance(ctx, RecCall):
            ctx.flush()

    def _call(self, run: RunRecording, x, t, model, to, kwargs) -> Optional["RecCall"]:
        """This call's RecCall. Its step is known only once its sigma reaches the host, after the
        call (``RecCall.flush``): nothing here reads a device tensor."""
        run.inflight.process_ready()
        lay, passes = run.layout, run.passes
        dm = model.diffusion_model
        cou = to.get("cond_or_uncond")
        if x.shape[0] % max(1, len(cou or ())):
            return RecCall.skipped(self, run, t, dm, "calls whose batch does not split into CFG passes were not recorded")
        first: Dict[int, Tuple[int, int]] = {}
        for c, s0, n in pass_samples(cou, x.shape[0]):
            first.setdefault(c, (s0, n))
        per = x.shape[0] // max(1, len(cou or ()))
        # prompt 0 / 1 = the user's positive / negative prompt, whichever pass the guider gives it
        prompt_samples = tuple((c, *first[i]) for c in lay.prompts
                               for i in sorted(passes.indices(PROMPTS[PROMPT_NAMES[c]], model)) if i in first)
        if not prompt_samples:
            return None
        if per != lay.batch:
            return RecCall.skipped(self, run, t, dm, "calls with another batch size than the latent were not recorded")
        fam = self.family
        grid = fam.grid(dm, tuple(x.shape), kwargs)
        if tuple(grid[1:]) != tuple(lay.grid[1:]):
            return RecCall.skipped(self, run, t, dm, "calls on a cropped latent (area conditioning) were not recorded")
        frames = None
        cw = to.get("context_window")
        if cw is not None and getattr(cw, "dim", None) == 2 and getattr(cw, "index_list", None) is not None:
            latent = list(cw.index_list)
            anchor = getattr(cw, "causal_anchor_index", None)
            if anchor is not None and anchor >= 0:
                latent = [anchor] + latent
            pt = fam.patch_size(dm)[0]
            frames = [latent[j * pt] // pt for j in range(len(latent) // pt)]
        return RecCall(self, run, t, grid, fam.video_prefix(dm, kwargs, grid), dm, prompt_samples, frames)

    def tracked_channels(self, run: RunRecording, ref: BlockRef, vis: torch.Tensor) -> torch.Tensor:
        """Channels whose per-token values are recorded for ``ref``: explicit, or the top_k by
        peak-to-mean ratio at the first recorded call of the run (then fixed for the run)."""
        dev = vis.device
        if self.channels is not None:
            return run.device_tensor(("ch", self.channels), lambda: torch.tensor(self.channels, dtype=torch.long), dev)
        def make(d):  # detected on another device (MultiGPU): the same channels everywhere
            other = next((v for (b, _), v in run.channels_on.built.items() if b == ref.flat), None)
            return other.to(d) if other is not None else detect_ma_channels(vis, 0.0, self.top_k)[0]
        return run.channels_on.get(ref.flat, dev, make)


def _samples_steered(samples: Optional[Tuple[int, ...]], s0: int, per: int) -> bool:
    return samples is None or any(s0 <= s < s0 + per for s in samples)


class InFlight(Shared):
    """Recorded calls whose data is on its way to the host (an asynchronous copy each), stored
    in call order once it has arrived: the recorder never waits for the GPU during a run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: List[Tuple[Any, torch.Tensor, Any]] = []  # (RecCall, host buffer, CUDA event or None)

    def push(self, call: "RecCall", host: torch.Tensor, event) -> None:
        with self._lock:
            self._queue.append((call, host, event))
        if event is None:
            self.process_ready()

    def process_ready(self, wait: bool = False) -> None:
        with self._lock:
            while self._queue:
                call, host, event = self._queue[0]
                if event is not None:
                    if wait:
                        event.synchronize()
                    elif not event.query():
                        return
                self._queue.pop(0)
                call.store(host)

    def drain(self) -> None:
        self.process_ready(wait=True)


class RecCall(Shared):
    """One recorded model call: the small device tensors gathered in it, and where they go."""

    calls_plan = True  # the block patches hand this call to the plan (hooks.IdleCall: False)

    def __init__(self, plan: RecorderPlan, run: RunRecording, sigma: torch.Tensor, grid, prefix: int, diffusion_model,
                 prompt_samples: Tuple[Tuple[int, int, int], ...], frames: Optional[List[int]], note: str = ""):
        self.plan, self.run, self.sigma = plan, run, sigma
        self.grid, self.prefix, self.diffusion_model = grid, prefix, diffusion_model
        self.prompt_samples = prompt_samples  # (prompt id, first sample, samples) per recorded CFG pass
        self.frames = frames          # global token-frame of each local frame (context windows), or None
        self.note = note              # noted for the run if this call's step is recorded (and nothing gathered)
        self.pending: List[Tuple[str, int, int, List[int], int, List[torch.Tensor]]] = []
        self._recorded: set = set()
        self._steered: Dict[int, Tuple[Optional[Tuple[int, ...]], bool, int]] = {}  # block -> steered samples, steered first, item

    @classmethod
    def skipped(cls, plan, run, sigma, dm, note: str) -> "RecCall":
        return cls(plan, run, sigma, None, 0, dm, (), None, note)

    def _fail(self, where: str, exc: BaseException) -> None:
        """Log the first failure of a run with its traceback, then record nothing more of it:
        one report, not one per block and step."""
        if not self.run.failed:
            log.exception("comfyui-stas MA Recorder: recording failed in %s; sampling continues, "
                          "the rest of this run is not recorded", where)
        self.run.failed = True
        self.run.note(f"recording failed in {where}: {type(exc).__name__}: {exc}")

    def frames_for(self, grid) -> Optional[List[int]]:
        run_t = self.run.layout.grid[0]
        if self.frames is None:
            if grid[0] > run_t:
                self.run.note(f"calls with {grid[0]} latent frames (run has {run_t}) were not recorded")
                return None
            return list(range(grid[0]))
        if len(self.frames) != grid[0] or max(self.frames) >= run_t:
            self.run.note("context-window calls whose frames could not be mapped were not recorded")
            return None
        return self.frames

    # -- block hook (recorder's own patch): gather every frame; which are kept is decided in store
    def record_block(self, h: torch.Tensor, ref: BlockRef, to) -> None:
        if not self.prompt_samples:
            return
        try:
            fam, run = self.plan.family, self.run
            grid = fam.call_grid(self.grid, to)
            frames = self.frames_for(grid)
            if frames is None:
                return
            start = fam.visual_start(ref.kind, to, self.prefix)
            n_vis = grid[0] * grid[1] * grid[2]
            if start + n_vis > h.shape[1]:
                run.note(f"block {ref.flat}: fewer tokens than the video grid; not recorded (unknown layout)")
                return
            vis = h.narrow(1, start, n_vis)
            chans = self.plan.tracked_channels(run, ref, vis)
            tok = run.local_tokens(range(len(frames)), grid, h.device)
            for c, s0, per in self.prompt_samples:
                part = vis.narrow(0, s0, per)
                vals = part.index_select(1, tok).index_select(2, chans)   # a copy: later in-place edits don't reach it
                peak, asum = channel_stats(part)
                self.pending.append(("block", ref.flat, c, frames, n_vis, [chans, vals, peak, asum]))
            self._recorded.add(ref.flat)
        except Exception as e:  # a diagnostic must never stop the render
            self._fail(f"block {ref.flat}", e)

    # -- STAS observer (hooks.STEER_OBSERVERS) ----------------------------------------
    def stas_steer(self, phase: str, ref: BlockRef, h: torch.Tensor, vis_start: int, grid, token_idx: torch.Tensor,
                   channels: torch.Tensor, valid: Optional[torch.Tensor], samples: Optional[Tuple[int, ...]],
                   steered: Optional[torch.Tensor] = None) -> None:
        """hooks.STEER_OBSERVERS: STAS is about to steer (phase "before") or has steered ("after")
        ``channels`` (those with ``valid`` False are left alone) at ``token_idx`` of the batch's ``samples`` (None: all);
        ``steered``: a device bool, whether this call's sigma lies in STAS's window."""
        if ref.flat not in self.plan.block_set or not self.prompt_samples:
            return
        try:
            if phase == "before" and ref.flat not in self._steered:
                on = steered if steered is not None else torch.ones((), dtype=torch.bool, device=h.device)
                self._steered[ref.flat] = (samples, ref.flat not in self._recorded, len(self.pending))
                self.pending.append(("steered", ref.flat, -1, [], 0, [on.reshape(1)]))
            frames = self.frames_for(grid)
            if frames is None:
                return
            n_vis = grid[0] * grid[1] * grid[2]
            vis = h.narrow(1, vis_start, n_vis)
            tok = self.run.local_tokens(range(len(frames)), grid, h.device)
            for c, s0, per in self.prompt_samples:
                if not _samples_steered(samples, s0, per):
                    continue
                vals = vis.narrow(0, s0, per).index_select(1, tok).index_select(2, channels)
                if phase == "before":
                    ok = valid if valid is not None else torch.ones_like(channels, dtype=torch.bool)
                    self.pending.append(("before", ref.flat, c, frames, 0, [channels, vals, torch.isin(tok, token_idx), ok]))
                else:
                    self.pending.append(("after", ref.flat, c, frames, 0, [vals]))
        except Exception as e:
            self._fail(f"STAS observer at block {ref.flat}", e)

    def flush(self) -> None:
        """After the call: start one asynchronous copy of this call's sigma and gathered tensors to
        the host; ``store`` files them once they are there."""
        try:
            flat = pack_flat([self.sigma.reshape(-1)[:1]] + [t for item in self.pending for t in item[5]])
            host, event = flat, None
            if flat.is_cuda:
                try:
                    host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
                except RuntimeError:  # no pinned memory here: a plain (synchronous) copy
                    host = flat.cpu()
                else:
                    host.copy_(flat, non_blocking=True)
                    event = torch.cuda.Event()
                    event.record()
            self.run.inflight.push(self, host, event)
        except Exception as e:
            self.pending = []
            self._fail("flush", e)

    def store(self, host: torch.Tensor) -> None:
        """File this call's data into the run (on the host, in call order)."""
        run = self.run
        try:
            step = run.layout.step_of(float(host[0]))
            if step is None or step not in run.layout.steps or run.failed:
                return
            if self.note:
                run.note(self.note)
            cpu = unpack_flat(host[1:], [t for item in self.pending for t in item[5]])
            items, i = [], 0
            for kind, block, prompt, frames, n_vis, ts in self.pending:
                items.append((kind, block, prompt, frames, n_vis, cpu[i:i + len(ts)]))
                i += len(ts)
            self._store(step, items)
        except Exception as e:
            self._fail("store", e)
        finally:
            self.pending = []

    def _keep(self, block: int, step: int, prompt: int, frames: List[int], vals: torch.Tensor):
        """(frames not recorded yet for (block, step, prompt), their part of ``vals`` [b, F*P, ...])."""
        js = self.run.claim(block, step, prompt, frames)
        if len(js) == len(frames):
            return frames, vals
        p = vals.shape[1] // max(1, len(frames))
        v = vals.reshape(vals.shape[0], len(frames), p, *vals.shape[2:])[:, js]
        return [frames[j] for j in js], v.reshape(vals.shape[0], len(js) * p, *vals.shape[2:])

    def _view(self, block: int, prompt: int, items) -> str:
        st = self._steered.get(block)
        if st is None:
            return "unsteered"
        samples, steer_first, at = st
        s0, per = next((s0, per) for c, s0, per in self.prompt_samples if c == prompt)
        if not _samples_steered(samples, s0, per) or not bool(items[at][5][0].item()):
            return "unsteered"
        return "after steering" if steer_first else "before steering"

    def _store(self, step: int, items) -> None:
        run, kept = self.run, {}
        for kind, block, prompt, frames, n_vis, ts in items:
            if kind == "block":
                chans, vals, peak, asum = ts
                frames, vals = self._keep(block, step, prompt, frames, vals)
                kept[(block, prompt)] = set(frames)
                if frames:
                    run.write_block(block, step, prompt, frames, chans, vals, peak, asum, n_vis,
                                    self._view(block, prompt, items))
        befores = {}
        for kind, block, prompt, frames, _, ts in items:
            if kind == "before":
                befores[(block, prompt)] = (frames, ts)
            elif kind == "after" and (block, prompt) in befores:
                frames, (chans, before, mask, ok) = befores.pop((block, prompt))
                if self._view(block, prompt, items) == "unsteered":
                    continue
                keep = ok.bool()  # auto channels under STAS's threshold were not steered: leave them out
                if (block, prompt) not in kept:  # STAS's block was not recorded by the block hook
                    kept[(block, prompt)] = set(self._keep(block, step, prompt, frames, before)[0])
                js = [j for j, f in enumerate(frames) if f in kept[(block, prompt)]]
                if not js or not bool(keep.any()):
                    continue
                p = before.shape[1] // len(frames)
                sel = torch.tensor([j * p + q for j in js for q in range(p)], dtype=torch.long)
                run.write_steer(block, step, prompt, [frames[j] for j in js], chans[keep], before[:, sel][..., keep],
                                ts[0][:, sel][..., keep], mask[sel])


def _first_cond(guider) -> Optional[dict]:
    """The first conditioning dict the guider samples with (its options, e.g. LTXVAddGuide's ``keyframe_idxs``,
    which say how many latent frames are guides rather than video), or None."""
    for conds in (getattr(guider, "original_conds", None) or {}).values():
        for c in conds or ():
            if isinstance(c, dict):
                return c
    return None


def prompt_ids(record: str) -> Tuple[int, ...]:
    """The recorded passes of the MA Recorder's ``record`` choice (ids of record.PROMPT_NAMES)."""
    return tuple(c for c, name in PROMPT_NAMES.items() if PROMPTS[name] <= PROMPTS[record])
