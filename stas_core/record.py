"""Recording massive activations during a sampling run (pure torch: no ComfyUI import).
Per (block, step, CFG pass) an ``Entry`` holds |h| of the tracked MA channels on a strided token
subsample, per-channel peak and |h| sums over all tokens, and STAS's values before and after
steering; one asynchronous CPU copy per recorded model call, checked against the user's memory budget."""
from __future__ import annotations

import bisect
import json
import math
import threading
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .blocks import parse_index_list
from .layout import Grid
from .shared import PerDevice, Shared
from .tagged_file import read_tagged, save_tagged

FORMAT = "comfyui-stas/ma-recording/1"
PROMPT_NAMES = {0: "cond", 1: "uncond"}
"""The recorded CFG passes by id: 0 = the positive prompt, 1 = the negative prompt."""
PROMPT_IDS = {v: k for k, v in PROMPT_NAMES.items()}
AUTO_MAX_TOKENS = 32768
"""token_stride 0 (auto) keeps every token up to this many per recorded block call."""


# -- user input ------------------------------------------------------------------------------

def parse_steps(text: str, n_steps: int) -> List[int]:
    """Step indices (0-based, of this run's schedule) named by ``text``, sorted and unique.

    ``all`` (also empty); single indices; inclusive ranges ``a-b``; comma lists; negative indices
    count from the end (``-1`` = last step).  Indices past the end of this run are dropped
    (``0-19`` on an 8-step run records 0-7), so one setting serves runs of different length; an
    empty result is the caller's error to raise (it knows the node's name).  Syntax errors raise
    ValueError.  Same grammar as the block lists (``blocks.parse_index_list``).
    """
    if (text or "").strip().lower() in ("", "all"):
        return list(range(n_steps))
    return parse_index_list(text, n_steps, "steps", words={"all": range(n_steps)}, clip=True,
                            hint="Use 'all', a step like 0, a range like 0-9 or a list like 0,5,10 "
                                 "(0 = first denoising step, -1 = last).")


def kept_rows_cols(h: int, w: int, stride: int) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Token rows and columns of one latent frame kept at ``stride`` (first and last always kept)."""
    stride = max(1, int(stride))
    rows = sorted(set(range(0, h, stride)) | {h - 1})
    cols = sorted(set(range(0, w, stride)) | {w - 1})
    return tuple(rows), tuple(cols)


def auto_stride(grid: Grid, max_tokens: int = AUTO_MAX_TOKENS) -> int:
    """Smallest stride whose kept tokens (all frames) fit in ``max_tokens``."""
    t, h, w = grid
    s = 1
    while True:
        r, c = kept_rows_cols(h, w, s)
        if t * len(r) * len(c) <= max_tokens or (len(r) <= 2 and len(c) <= 2):
            return s
        s += 1


# -- the layout of one run -------------------------------------------------------------------

@dataclass
class RunLayout:
    """Everything fixed for one sampling run; JSON-serialisable (it is the export's metadata)."""

    family: str
    model: str
    hidden_size: int
    n_blocks: int
    latent_shape: Tuple[int, ...]
    grid: Tuple[int, int, int]
    sigmas: Tuple[float, ...]
    steps: Tuple[int, ...]
    blocks: Tuple[int, ...]
    prompts: Tuple[int, ...]
    batch: int
    stride: int
    rows: Tuple[int, ...]
    cols: Tuple[int, ...]
    top_k: int
    explicit_channels: Optional[Tuple[int, ...]] = None

    @property
    def n_positions(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def n_tracked(self) -> int:
        return len(self.explicit_channels) if self.explicit_channels is not None else self.top_k

    def positions(self) -> torch.Tensor:
        """Kept token positions inside a latent frame (row * W' + col), int64 [P]."""
        w = self.grid[2]
        return torch.tensor([r * w + c for r in self.rows for c in self.cols], dtype=torch.long)

    def entry_bytes(self, steer_channels: int = 0) -> int:
        b, (t, _, _) = self.batch, self.grid
        main = b * t * self.n_positions * self.n_tracked * 4 + b * self.hidden_size * (4 + 8) + t
        steer = (2 * b * t * self.n_positions * steer_channels * 4 + t * self.n_positions) if steer_channels else 0
        return main + steer

    def estimate_bytes(self) -> int:
        """Upper bound of the recorded data of this run without steering values (checked before step 1)."""
        return len(self.blocks) * len(self.steps) * len(self.prompts) * self.entry_bytes()

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "RunLayout":
        d = dict(d)
        if "chunks" in d:  # recordings saved before "chunks" was renamed "prompts"
            d.setdefault("prompts", d.pop("chunks"))
        for k in ("latent_shape", "grid", "sigmas", "steps", "blocks", "prompts", "rows", "cols"):
            d[k] = tuple(d[k])
        if d.get("explicit_channels") is not None:
            d["explicit_channels"] = tuple(d["explicit_channels"])
        return cls(**d)

    def step_of(self, sigma: float) -> Optional[int]:
        """Denoising step of a model call at ``sigma``: the step whose sigma it is (within 1e-4
        relative), else the step whose interval contains it (intermediate evaluations of
        multi-stage samplers).  A second-order sampler's correction at sigma[i+1] therefore counts
        as step i+1; the first call at a sigma is the one recorded."""
        s = self.sigmas
        if not s:
            return None
        for i, v in enumerate(s[:-1]):
            if abs(v - sigma) <= 1e-4 * max(abs(v), 1e-3):
                return i
        neg = [-v for v in s]  # ascending
        j = bisect.bisect_right(neg, -sigma)  # first index with s[j] < sigma
        if 1 <= j <= len(s) - 1:
            return j - 1
        return None


# -- recorded data ---------------------------------------------------------------------------

@dataclass
class Entry:
    """Recorded data of one (block, step, prompt); see the module docstring."""

    mag: torch.Tensor                   # float32 [B, T, P, K]
    filled: torch.Tensor                # bool [T]
    channels: torch.Tensor              # int64 [K]
    peak: torch.Tensor                  # float32 [B, D]
    abs_sum: torch.Tensor               # float64 [B, D]
    count: int = 0                      # visual tokens summed into abs_sum, per row
    view: str = "unsteered"             # the block output seen: unsteered / after steering / before steering
    steer_channels: Optional[torch.Tensor] = None   # int64 [Ks]
    steer_before: Optional[torch.Tensor] = None     # float32 [B, T, P, Ks] (signed)
    steer_after: Optional[torch.Tensor] = None      # float32 [B, T, P, Ks]
    steer_mask: Optional[torch.Tensor] = None       # bool [T, P]: kept tokens STAS steered

    def nbytes(self) -> int:
        ts = [self.mag, self.filled, self.channels, self.peak, self.abs_sum, self.steer_channels,
              self.steer_before, self.steer_after, self.steer_mask]
        return sum(t.numel() * t.element_size() for t in ts if t is not None)

    def mean_abs(self) -> torch.Tensor:
        """Mean |h| over all visual tokens and channels, per batch row: float64 [B]."""
        d = self.abs_sum.shape[1]
        return self.abs_sum.sum(1) / max(1, self.count * d)

    def ratios(self) -> torch.Tensor:
        """Peak-to-mean ratio of every channel (max over batch rows): float32 [D]."""
        mean = self.mean_abs().clamp_min(1e-30)
        return (self.peak.double() / mean[:, None]).amax(0).float()

    @property
    def has_steer(self) -> bool:
        return self.steer_before is not None and self.steer_after is not None


class RunRecording(Shared):
    """The recorded data of one sampling run (CPU tensors) plus its output fingerprint."""

    def __init__(self, layout: RunLayout, budget_bytes: int):
        self.layout = layout
        self.budget_bytes = int(budget_bytes)
        self.entries: Dict[Tuple[int, int, int], Entry] = {}
        self.notes: Dict[str, int] = {}
        self.failed = False  # an internal error: the rest of this run is not recorded
        self.fingerprint: Optional[Tuple[Tuple[int, ...], torch.Tensor]] = None
        self.channels: Dict[int, torch.Tensor] = {}   # block -> tracked channels (CPU int64)
        self._claimed: Dict[Tuple[int, int, int], set] = {}
        self._positions = layout.positions()
        self._dev = PerDevice()   # small index tensors of this run, per device
        self._lock = threading.Lock()
        self._bytes = 0


    # -- bookkeeping on the host (no tensor reads) --------------------------------------
    def note(self, text: str) -> None:
        with self._lock:
            self.notes[text] = self.notes.get(text, 0) + 1

    @property
    def nbytes(self) -> int:
        return self._bytes

    def claim(self, block: int, step: int, prompt: int, frames: Sequence[int]) -> List[int]:
        """Local indices j of ``frames`` (global token-frames of this call) not recorded yet for
        (block, step, prompt); they are marked as taken (first call to reach a frame wins)."""
        key = (block, step, prompt)
        with self._lock:
            taken = self._claimed.setdefault(key, set())
            js = [j for j, f in enumerate(frames) if f not in taken]
            taken.update(frames[j] for j in js)
        return js

    def local_tokens(self, js: Sequence[int], grid: Grid, device) -> torch.Tensor:
        """Token indices (relative to the first video token of a call of ``grid``) of the kept
        positions of local frames ``js``, on ``device``; cached."""
        hw = grid[1] * grid[2]
        return self._dev.get(("tok", tuple(js), hw), device, lambda d: (
            torch.tensor(list(js), dtype=torch.long)[:, None] * hw + self._positions[None, :]).reshape(-1).to(d))

    def device_tensor(self, key: Any, make, device) -> torch.Tensor:
        return self._dev.get(key, device, lambda d: make().to(d))

    def release_device(self) -> None:
        """Drop the per-device index tensors once the run is over (the data is on the CPU)."""
        self._dev = PerDevice()

    # -- writes (CPU, under the lock) ----------------------------------------------------
    def _entry(self, block: int, step: int, prompt: int, k: int, d: int) -> Optional[Entry]:
        key = (block, step, prompt)
        e = self.entries.get(key)
        if e is None:
            lay = self.layout
            b, t, p = lay.batch, lay.grid[0], lay.n_positions
            need = b * t * p * k * 4 + b * d * 12 + t
            if self._bytes + need > self.budget_bytes:
                self.notes["data over max_memory_mb was not kept"] = self.notes.get("data over max_memory_mb was not kept", 0) + 1
                return None
            e = Entry(mag=torch.full((b, t, p, k), float("nan")), filled=torch.zeros(t, dtype=torch.bool),
                      channels=torch.zeros(k, dtype=torch.long), peak=torch.zeros(b, d),
                      abs_sum=torch.zeros(b, d, dtype=torch.float64))
            self.entries[key] = e
            self._bytes += e.nbytes()
        return e

    def write_block(self, block: int, step: int, prompt: int, frames: Sequence[int], channels: torch.Tensor,
                    vals: torch.Tensor, peak: torch.Tensor, abs_sum: torch.Tensor, n_tokens: int, view: str) -> None:
        """Store one call's data: ``vals`` [b, len(frames)*P, K] (|h| or signed, abs taken here)."""
        with self._lock:
            k = channels.numel()
            e = self._entry(block, step, prompt, k, peak.shape[1])
            if e is None:
                return
            fr = torch.tensor(list(frames), dtype=torch.long)
            b = e.mag.shape[0]
            e.mag[:, fr] = vals.abs().float().reshape(b, len(frames), -1, k)  # fp16/bf16 models: stored as fp32
            e.filled[fr] = True
            e.channels = channels.long()
            e.peak = torch.maximum(e.peak, peak.float())
            e.abs_sum += abs_sum.double()
            e.count += int(n_tokens)
            e.view = view
            self.channels.setdefault(block, channels.long())

    def write_steer(self, block: int, step: int, prompt: int, frames: Sequence[int], channels: torch.Tensor,
                    before: torch.Tensor, after: torch.Tensor, mask: torch.Tensor) -> None:
        """Store STAS's channels at the kept tokens before and after steering (signed)."""
        with self._lock:
            e = self.entries.get((block, step, prompt))
            if e is None:  # the block record was not kept (budget): nothing to attach to
                return
            ks = channels.numel()
            b, t, p, _ = e.mag.shape
            if e.steer_before is None or e.steer_before.shape[-1] != ks:
                need = 2 * b * t * p * ks * 4 + t * p
                if self._bytes + need > self.budget_bytes:
                    self.notes["steering values over max_memory_mb were not kept"] = \
                        self.notes.get("steering values over max_memory_mb were not kept", 0) + 1
                    return
                e.steer_before = torch.full((b, t, p, ks), float("nan"))
                e.steer_after = torch.full((b, t, p, ks), float("nan"))
                e.steer_mask = torch.zeros(t, p, dtype=torch.bool)
                self._bytes += need
            fr = torch.tensor(list(frames), dtype=torch.long)
            e.steer_channels = channels.long()
            e.steer_before[:, fr] = before.float().reshape(b, len(frames), p, ks)  # in the model's dtype
            e.steer_after[:, fr] = after.float().reshape(b, len(frames), p, ks)
            e.steer_mask[fr] = mask.reshape(len(frames), p).bool()

    # -- reading -------------------------------------------------------------------------
    def recorded_steps(self) -> List[int]:
        return sorted({s for (_, s, _) in self.entries})

    def recorded_blocks(self) -> List[int]:
        return sorted({b for (b, _, _) in self.entries})

    def recorded_prompts(self) -> List[int]:
        return sorted({c for (_, _, c) in self.entries})

    # -- export / import -----------------------------------------------------------------
    def to_tensors(self) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
        tensors: Dict[str, torch.Tensor] = {"positions": self._positions.clone()}
        views = {}
        for (b, s, c), e in sorted(self.entries.items()):
            p = f"b{b}.s{s}.c{c}."  # c = the prompt id (the saved files' key format, unchanged)
            tensors[p + "mag"] = e.mag
            tensors[p + "filled"] = e.filled
            tensors[p + "channels"] = e.channels
            tensors[p + "peak"] = e.peak
            tensors[p + "abs_sum"] = e.abs_sum
            tensors[p + "count"] = torch.tensor([e.count], dtype=torch.long)
            views[f"{b},{s},{c}"] = e.view
            if e.has_steer:
                tensors[p + "steer_channels"] = e.steer_channels
                tensors[p + "steer_before"] = e.steer_before
                tensors[p + "steer_after"] = e.steer_after
                tensors[p + "steer_mask"] = e.steer_mask
        if self.fingerprint is not None:
            tensors["fingerprint"] = self.fingerprint[1]
        meta = {"format": FORMAT, "layout": json.dumps(self.layout.to_json()), "views": json.dumps(views),
                "notes": json.dumps(self.notes),
                "fingerprint_shape": json.dumps(list(self.fingerprint[0]) if self.fingerprint else None)}
        return {k: v.contiguous() for k, v in tensors.items()}, meta

    def save(self, path: str) -> None:
        tensors, meta = self.to_tensors()
        save_tagged(tensors, path, meta)

    @classmethod
    def load(cls, path: str) -> "RunRecording":
        meta, tensors = read_tagged(path, FORMAT, "MA recording")
        layout = RunLayout.from_json(json.loads(meta["layout"]))
        run = cls(layout, budget_bytes=1 << 62)
        views = json.loads(meta.get("views", "{}"))
        run.notes = json.loads(meta.get("notes", "{}"))
        keys = {tuple(int(x[1:]) for x in k.split(".")[:3]) for k in tensors if k.startswith("b")}
        for (b, s, c) in keys:
            p = f"b{b}.s{s}.c{c}."
            e = Entry(mag=tensors[p + "mag"], filled=tensors[p + "filled"], channels=tensors[p + "channels"],
                      peak=tensors[p + "peak"], abs_sum=tensors[p + "abs_sum"], count=int(tensors[p + "count"][0]),
                      view=views.get(f"{b},{s},{c}", "unsteered"),
                      steer_channels=tensors.get(p + "steer_channels"), steer_before=tensors.get(p + "steer_before"),
                      steer_after=tensors.get(p + "steer_after"), steer_mask=tensors.get(p + "steer_mask"))
            run.entries[(b, s, c)] = e
            run.channels.setdefault(b, e.channels)
            run._bytes += e.nbytes()
        shape = json.loads(meta.get("fingerprint_shape") or "null")
        if shape is not None and "fingerprint" in tensors:
            run.fingerprint = (tuple(shape), tensors["fingerprint"])
        return run


# -- device-side gathering (called from block hooks; no host sync) ---------------------------

def channel_stats(h_rows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel max |h| (float32 [b, D]) and sum of |h| (float32 [b, D]) over the tokens of
    h_rows [b, N, D], without a full-size temporary (amax/amin and an L1 norm)."""
    peak = torch.maximum(h_rows.amax(dim=1), -h_rows.amin(dim=1)).float()
    asum = torch.linalg.vector_norm(h_rows, ord=1, dim=1, dtype=torch.float32)
    return peak, asum


def pack_flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Small tensors flattened to float32 and concatenated (one buffer to move in one copy)."""
    return torch.cat([t.reshape(-1).float() for t in tensors])


def unpack_flat(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """``pack_flat``'s buffer split back into tensors shaped and typed like ``like``."""
    out, i = [], 0
    for t in like:
        n = t.numel()
        v = flat[i:i + n].reshape(t.shape)
        out.append(v.to(t.dtype) if t.dtype != torch.float32 else v)
        i += n
    return out


# -- run identity ---------------------------------------------------------------------------

FINGERPRINT_POINTS = 256


def packed(x):
    """A nested latent (LTX-2: video, audio) as the sampler packs it, [B, 1, N]; any other tensor as it is."""
    if getattr(x, "is_nested", False):
        return torch.cat([t.reshape(t.shape[0], 1, -1) for t in x.unbind()], dim=-1)
    return x


def fingerprint(x: torch.Tensor) -> Tuple[Tuple[int, ...], torch.Tensor]:
    """A small identity of a sampled latent: its shape and 256 evenly spaced values (CPU float32)."""
    x = packed(x)
    flat = x.detach().reshape(-1)
    n = flat.numel()
    idx = torch.linspace(0, max(n - 1, 0), min(FINGERPRINT_POINTS, n)).round().long().to(flat.device)
    return tuple(int(s) for s in x.shape), flat.index_select(0, idx).float().cpu()


def fingerprint_matches(fp: Tuple[Tuple[int, ...], torch.Tensor], x: torch.Tensor) -> bool:
    """True when ``x`` is the latent ``fp`` was taken from (tolerates fp16 intermediates)."""
    shape, vals = fp
    x = packed(x)
    if tuple(int(s) for s in x.shape) != tuple(shape):
        return False
    _, other = fingerprint(x)
    scale = float(vals.abs().max()) if vals.numel() else 0.0
    return bool(torch.allclose(other, vals, rtol=1e-3, atol=1e-6 * max(scale, 1e-12)))


class Recording(Shared):
    """What the MA Recorder node outputs (STAS_RECORDING): the runs recorded through its MODEL.

    Shared by reference (ComfyUI may deep-copy model options).  Keeps the newest runs whose
    data fit ``budget_bytes`` together (at most ``keep`` of them), so re-queueing a prompt with
    another seed does not grow memory; a visualizer finds its run by the LATENT it is given.
    """

    def __init__(self, description: str, budget_bytes: int, keep: int = 4, model_fingerprint: Any = None):
        self.description = description
        self.model_fingerprint = model_fingerprint  # profile.ModelFingerprint of the recorded model, for profiles
        self.budget_bytes = int(budget_bytes)
        self.keep = int(keep)
        self.runs: List[RunRecording] = []
        self._lock = threading.Lock()


    def make_room(self, need: int) -> None:
        """Drop the oldest runs until ``need`` more bytes fit in the budget (called before a run)."""
        with self._lock:
            while self.runs and (sum(r.nbytes for r in self.runs) + need > self.budget_bytes
                                 or len(self.runs) >= self.keep):
                self.runs.pop(0)

    def remaining(self) -> int:
        with self._lock:
            return self.budget_bytes - sum(r.nbytes for r in self.runs)

    def add(self, run: RunRecording) -> None:
        with self._lock:
            self.runs.append(run)

    def run_for(self, latent: torch.Tensor, who: str = "MA Visualizer") -> RunRecording:
        """The recorded run whose sampled output is ``latent``, or a ValueError saying why not."""
        with self._lock:
            runs = list(self.runs)
        if not runs:
            raise ValueError(
                f"{who}: the recording is empty: no sampler has run the MA Recorder's MODEL yet (or the run "
                "failed). Connect the MA Recorder's MODEL output to the sampler whose LATENT output you connect here.")
        for run in reversed(runs):
            if run.fingerprint is not None and fingerprint_matches(run.fingerprint, latent):
                return run
        raise ValueError(
            f"{who}: this recording is from another run: the LATENT given (shape {tuple(latent.shape)}) is not the "
            f"output of a sampling run that used this MA Recorder's MODEL ({len(runs)} run(s) recorded, latent "
            f"shape {tuple(runs[-1].fingerprint[0]) if runs[-1].fingerprint else '?'}). Connect the LATENT output "
            "(not denoised_output) of the sampler that the MA Recorder's MODEL feeds.")


def describe_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} GB"


def stride_for(grid: Grid, token_stride: int) -> int:
    """The stride a run uses: ``token_stride`` if > 0, else ``auto_stride``."""
    return int(token_stride) if token_stride and token_stride > 0 else auto_stride(grid)


def isfinite_or_none(x: float) -> Optional[float]:
    return float(x) if x is not None and math.isfinite(float(x)) else None
