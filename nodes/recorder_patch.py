"""Patching glue of the MA Recorder: what it installs on a cloned MODEL to record massive
activations while any sampler runs.

Same shape as STAS Model Patch's glue (``patching.py``); the block patches are the shared ones of ``hooks.py``:

* ``RecorderPlan``: the user's settings and the ``Recording`` handle (the STAS_RECORDING
  output), shared by every clone; ``steer_block`` is the name ``patching``'s block patches call
  on a plan - for the recorder it *records* the block output.
* ``RecOuterSample`` (keyed OUTER_SAMPLE wrapper): resolves the steps, sizes the recording and
  refuses (clear ValueError, before step 1) what would record nothing or exceed the memory
  budget; scopes a fresh ``RunRecording`` to the run through a clone of ``model_options``; on
  success stores the sampled latent's fingerprint (so the visualizer can tell runs apart) and
  hands the run to the ``Recording``.
* ``RecApplyModel`` (keyed APPLY_MODEL wrapper): per model call, maps sigma to the step, picks
  the CFG chunks to record and the context-window frames, and hands the block patches a
  ``RecCall`` through that call's own transformer_options; also lists the ``RecCall`` under
  ``hooks.STEER_OBSERVERS`` so that STAS (if present) reports values before and after it
  steers.  After the call, ``RecCall.flush`` moves everything recorded in it to the CPU.

Cost (per recorded model call): one host read of sigma (STAS alone reads none: it gates on the
device), and ONE device to host transfer of the gathered tensors (one synchronisation); per
recorded block, an
index_select of [B, T'*P, K] values and three reductions over the block output (peak and sum of
|h| per channel).  Calls outside the recorded steps cost one sigma read and nothing else.
A failure inside recording never stops the sampler: it is logged, noted on the run, and the
visualizer reports it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..stas_core.channels import detect_ma_channels
from ..stas_core.record import (Recording, RunLayout, RunRecording, channel_stats, describe_bytes,
                                fingerprint, flush_to_cpu, kept_rows_cols, parse_steps, stride_for)
from .families import BlockRef, Family
from .guiders import DEFAULT, NEGATIVE, POSITIVE, GuiderPasses, passes_of
from .hooks import STEER_OBSERVERS, WRAPPER_KEY, Shared, chain_block_patches, stable_key

RECORDER_KEY = WRAPPER_KEY + ".recorder"
log = logging.getLogger("comfyui-stas")


@dataclass(eq=False)
class RecorderPlan(Shared):
    family: Family
    blocks: Tuple[BlockRef, ...]
    steps_text: str
    chunks: Tuple[int, ...]
    channels: Optional[Tuple[int, ...]]
    top_k: int
    token_stride: int
    budget_bytes: int
    hidden_size: int
    n_blocks: int
    recording: Recording
    key: str = RECORDER_KEY + ".0"  # set by ``install_recorder`` (see ``hooks.stable_key``)

    def __deepcopy__(self, memo):
        return self

    @property
    def block_set(self) -> frozenset:
        return frozenset(r.flat for r in self.blocks)

    def steer_block(self, h: torch.Tensor, ref: BlockRef, call: "RecCall", transformer_options) -> None:
        """Called by patching's block patches when ``call.steer``: record this block's output."""
        call.record_block(h, ref, transformer_options)

    # -- one run ---------------------------------------------------------------------------
    def new_run(self, model_patcher, dm, shape: Tuple[int, ...], sigmas: torch.Tensor) -> RunRecording:
        """A RunRecording sized for this run, or a ValueError (before step 1) naming the fix."""
        if len(shape) != 5:
            raise ValueError(f"MA Recorder: the sampler got a latent of shape {tuple(shape)}, not a video latent "
                             "[B, C, T, H, W]. The MA Recorder records video models; remove it from image workflows.")
        grid = self.family.grid(dm, shape)
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
            blocks=tuple(r.flat for r in self.blocks), chunks=self.chunks, batch=int(shape[0]), stride=stride,
            rows=rows, cols=cols, top_k=self.top_k, explicit_channels=self.channels)
        need = layout.estimate_bytes()
        if need > self.budget_bytes:
            raise ValueError(
                f"MA Recorder: recording {len(layout.blocks)} block(s) x {len(steps)} step(s) x "
                f"{len(self.chunks)} chunk(s) of this {grid[0]}x{grid[1]}x{grid[2]}-token latent (batch {shape[0]}) needs "
                f"about {describe_bytes(need)}, over max_memory_mb ({describe_bytes(self.budget_bytes)}). Record fewer "
                "blocks or steps, raise token_stride, or raise max_memory_mb.")
        self.recording.make_room(need)
        return RunRecording(layout, budget_bytes=max(need, self.recording.remaining()))

    def tracked_channels(self, run: RunRecording, ref: BlockRef, vis: torch.Tensor) -> torch.Tensor:
        """Channels whose per-token values are recorded for ``ref``: explicit, or the top_k by
        peak-to-mean ratio at the first recorded call of the run (then fixed for the run)."""
        dev = vis.device
        if self.channels is not None:
            return run.device_tensor(("ch", self.channels), lambda: torch.tensor(self.channels, dtype=torch.long), dev)
        key = (ref.flat, dev)
        got = run.dev_channels.get(key)
        if got is None:
            with run._lock:
                got = run.dev_channels.get(key)
                if got is None:  # detected on another device (MultiGPU): the same channels everywhere
                    other = next((v for (b, _), v in run.dev_channels.items() if b == ref.flat), None)
                    got = other.to(dev) if other is not None else detect_ma_channels(vis, 0.0, self.top_k)[0]
                    run.dev_channels[key] = got
        return got


@dataclass
class IdleCall:
    """Context of a call that is not recorded (object-patched families need one in every call)."""

    diffusion_model: Any
    steer: bool = False

    def __deepcopy__(self, memo):
        return self


def _rows_steered(rows: Optional[Tuple[int, ...]], r0: int, per: int) -> bool:
    return rows is None or any(r0 <= r < r0 + per for r in rows)


class RecCall:
    """One recorded model call: what to record, and the small device tensors gathered so far."""

    steer = True  # patching's block patches act on a context whose ``steer`` is set

    def __init__(self, plan: RecorderPlan, run: RunRecording, step: int, grid, prefix: int, diffusion_model,
                 chunk_rows: Tuple[Tuple[int, int, int], ...], frames: Optional[List[int]]):
        self.plan, self.run, self.step = plan, run, step
        self.grid, self.prefix, self.diffusion_model = grid, prefix, diffusion_model
        self.chunk_rows = chunk_rows  # (chunk id, first row, rows) per recorded CFG chunk
        self.frames = frames          # global token-frame of each local frame (context windows), or None
        self.pending: List[Tuple[str, int, int, List[int], int, List[torch.Tensor]]] = []
        self._todo: Dict[Tuple[int, int], List[int]] = {}
        self._recorded: set = set()
        self._steered: Dict[int, Tuple[Optional[Tuple[int, ...]], bool]] = {}

    def __deepcopy__(self, memo):
        return self

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

    def todo(self, block: int, chunk: int, frames: List[int]) -> List[int]:
        key = (block, chunk)
        js = self._todo.get(key)
        if js is None:
            js = self.run.claim(block, self.step, chunk, frames)
            self._todo[key] = js
        return js

    # -- block hook (recorder's own patch) -------------------------------------------------
    def record_block(self, h: torch.Tensor, ref: BlockRef, to) -> None:
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
            for c, r0, per in self.chunk_rows:
                js = self.todo(ref.flat, c, frames)
                if not js:
                    continue
                tok = run.local_tokens(js, grid, h.device)
                rows = vis.narrow(0, r0, per)
                vals = rows.index_select(1, tok).index_select(2, chans)   # a copy: later in-place edits don't reach it
                peak, asum = channel_stats(rows)
                self.pending.append(("block", ref.flat, c, [frames[j] for j in js], n_vis, [chans, vals, peak, asum]))
            self._recorded.add(ref.flat)
        except Exception as e:  # a diagnostic must never stop the render
            self._fail(f"block {ref.flat}", e)

    # -- STAS observer (hooks.STEER_OBSERVERS) ----------------------------------------
    def stas_steer(self, phase: str, ref: BlockRef, h: torch.Tensor, vis_start: int, grid, token_idx: torch.Tensor,
                   channels: torch.Tensor, valid: Optional[torch.Tensor], rows: Optional[Tuple[int, ...]]) -> None:
        """hooks.STEER_OBSERVERS: STAS is about to steer (phase "before") or has steered ("after")
        ``channels`` (those with ``valid`` False are left alone) at ``token_idx`` of rows ``rows``."""
        if ref.flat not in self.plan.block_set:
            return
        try:
            if phase == "before":
                self._steered.setdefault(ref.flat, (rows, ref.flat not in self._recorded))
            frames = self.frames_for(grid)
            if frames is None:
                return
            n_vis = grid[0] * grid[1] * grid[2]
            vis = h.narrow(1, vis_start, n_vis)
            for c, r0, per in self.chunk_rows:
                if not _rows_steered(rows, r0, per):
                    continue
                js = self.todo(ref.flat, c, frames)
                if not js:
                    continue
                tok = self.run.local_tokens(js, grid, h.device)
                vals = vis.narrow(0, r0, per).index_select(1, tok).index_select(2, channels)
                g = [frames[j] for j in js]
                if phase == "before":
                    ok = valid if valid is not None else torch.ones_like(channels, dtype=torch.bool)
                    self.pending.append(("before", ref.flat, c, g, 0, [channels, vals, torch.isin(tok, token_idx), ok]))
                else:
                    self.pending.append(("after", ref.flat, c, g, 0, [vals]))
        except Exception as e:
            self._fail(f"STAS observer at block {ref.flat}", e)

    def _view(self, block: int, chunk: int) -> str:
        st = self._steered.get(block)
        if st is None:
            return "unsteered"
        rows, steer_first = st
        r0, per = next((r0, per) for c, r0, per in self.chunk_rows if c == chunk)
        if not _rows_steered(rows, r0, per):
            return "unsteered"
        return "after steering" if steer_first else "before steering"

    def flush(self) -> None:
        """Move everything this call gathered to the CPU in one transfer and store it."""
        if not self.pending:
            return
        try:
            tensors = [t for item in self.pending for t in item[5]]
            cpu = flush_to_cpu(tensors)
            i, befores = 0, {}
            items = []
            for kind, block, chunk, frames, n_vis, ts in self.pending:
                items.append((kind, block, chunk, frames, n_vis, cpu[i:i + len(ts)]))
                i += len(ts)
            run = self.run
            for kind, block, chunk, frames, n_vis, ts in items:
                if kind == "block":
                    chans, vals, peak, asum = ts
                    run.write_block(block, self.step, chunk, frames, chans, vals, peak, asum, n_vis,
                                    self._view(block, chunk))
            for kind, block, chunk, frames, _, ts in items:
                if kind == "before":
                    befores[(block, chunk)] = ts
                elif kind == "after" and (block, chunk) in befores:
                    chans, before, mask, ok = befores.pop((block, chunk))
                    keep = ok.bool()  # auto channels under STAS's threshold were not steered: leave them out
                    if bool(keep.any()):
                        run.write_steer(block, self.step, chunk, frames, chans[keep], before[..., keep],
                                        ts[0][..., keep], mask)
        except Exception as e:
            self._fail("flush", e)
        finally:
            self.pending = []


class RecApplyModel(Shared):
    def __init__(self, plan: RecorderPlan):
        self.plan = plan

    def _call(self, run: RunRecording, passes: GuiderPasses, x, t, model, to, kwargs) -> Optional[RecCall]:
        lay = run.layout
        dm = model.diffusion_model
        step = lay.step_of(float(t.reshape(-1)[0]))  # one host read per model call
        if step is None or step not in lay.steps:
            return None
        cou = list(to.get("cond_or_uncond") or [0])
        if x.shape[0] % len(cou):
            run.note("calls whose batch does not split into CFG chunks were not recorded")
            return None
        per = x.shape[0] // len(cou)
        # chunk 0 / 1 = the user's positive / negative prompt, whichever pass the guider gives it
        chunk_rows = tuple((c, cou.index(i) * per, per) for c in lay.chunks
                           for i in sorted(passes.indices(frozenset({CHUNK_ROLES[c]}), model)) if i in cou)
        if not chunk_rows:
            return None
        if per != lay.batch:
            run.note("calls with another batch size than the latent were not recorded")
            return None
        fam = self.plan.family
        grid = fam.grid(dm, tuple(x.shape))
        if tuple(grid[1:]) != tuple(lay.grid[1:]):
            run.note("calls on a cropped latent (area conditioning) were not recorded")
            return None
        frames = None
        cw = to.get("context_window")
        if cw is not None and getattr(cw, "dim", None) == 2 and getattr(cw, "index_list", None) is not None:
            latent = list(cw.index_list)
            anchor = getattr(cw, "causal_anchor_index", None)
            if anchor is not None and anchor >= 0:
                latent = [anchor] + latent
            pt = fam.patch_size(dm)[0]
            frames = [latent[j * pt] // pt for j in range(len(latent) // pt)]
        return RecCall(self.plan, run, step, grid, fam.prefix_tokens(dm, kwargs), dm, chunk_rows, frames)

    def __call__(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        plan = self.plan
        dm = executor.class_obj.diffusion_model
        run = transformer_options.get(plan.key + ".run")
        passes = transformer_options.get(plan.key + ".passes", DEFAULT)
        call = (self._call(run, passes, x, t, executor.class_obj, transformer_options, kwargs)
                if run is not None and not run.failed else None)
        if call is None:
            if plan.family.hook == "replace":
                return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
            transformer_options = {**transformer_options, plan.key: IdleCall(dm)}
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        observers = tuple(transformer_options.get(STEER_OBSERVERS) or ()) + (call,)
        transformer_options = {**transformer_options, plan.key: call, STEER_OBSERVERS: observers}
        out = executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        call.flush()
        return out


class RecOuterSample(Shared):
    """Sizes and scopes one RunRecording per sampling run; keeps it only if the run finishes."""

    def __init__(self, plan: RecorderPlan):
        self.plan = plan

    def __call__(self, executor, *args, **kwargs):
        import comfy.model_patcher

        plan = self.plan
        guider = executor.class_obj
        noise = args[0] if args else kwargs["noise"]
        sigmas = args[3] if len(args) > 3 else kwargs["sigmas"]
        mp = guider.model_patcher
        run = plan.new_run(mp, mp.model.diffusion_model, tuple(noise.shape), sigmas)
        orig = guider.model_options
        try:
            guider.model_options = comfy.model_patcher.create_model_options_clone(orig)
            to = guider.model_options.setdefault("transformer_options", {})
            to[plan.key + ".run"], to[plan.key + ".passes"] = run, passes_of(guider)
            out = executor(*args, **kwargs)
        finally:
            guider.model_options = orig
            run.release_device()
        run.fingerprint = fingerprint(out)
        plan.recording.add(run)
        if run.notes:
            log.warning("comfyui-stas MA Recorder: %s", "; ".join(f"{k} ({v}x)" for k, v in run.notes.items()))
        return out


def install_recorder(model, plan: RecorderPlan):
    """A clone of ``model`` that records; ``model`` is untouched.  Block patches chain onto any
    already there (STAS included: placed after STAS, the recorder sees the steered output)."""
    import comfy.patcher_extension as pe

    plan.key = stable_key(model, RECORDER_KEY)
    m = model.clone()
    chain_block_patches(m, plan)
    m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, plan.key, RecApplyModel(plan))
    m.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, plan.key, RecOuterSample(plan))
    return m


CHUNK_ROLES = {0: POSITIVE, 1: NEGATIVE}
"""The recorder's chunks: 0 records the user's positive prompt, 1 the negative one, under any guider."""


def chunk_ids(record: str) -> Tuple[int, ...]:
    return {"cond": (0,), "uncond": (1,), "both": (0, 1)}[record]

