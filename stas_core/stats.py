"""Statistics of a recorded run: the numbers the MA Visualizer shows and a profile is made of.
"Ratio" is ``channels.ma_ratio``'s peak-to-mean ratio everywhere; token groups are
``first_frame``, ``boundary`` (as STAS_MASK defines it) and ``interior``."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .layout import BoundarySpec, TokenClass, token_classes
from .profile import MAProfile
from .record import PROMPT_NAMES, Entry, RunRecording
from .tagged_file import atomic_write

GROUPS = ("first_frame", "boundary", "interior")


def group_spec(spec: Optional[BoundarySpec]) -> BoundarySpec:
    """The spec that defines the three groups: first frame always, boundaries as ``spec`` sets them."""
    s = spec or BoundarySpec()
    return BoundarySpec(True, True, s.head if s.boundaries else 0.0, s.tail if s.boundaries else 0.0, s.unit)


def kept_classes(run: RunRecording, spec: Optional[BoundarySpec] = None) -> np.ndarray:
    """TokenClass of every kept token, uint8 [T, P]."""
    t, h, w = run.layout.grid
    cls = token_classes((t, h, w), group_spec(spec)).numpy().reshape(t, h * w)
    pos = run.layout.positions().numpy()
    return cls[:, pos]


def class_groups(classes: np.ndarray) -> np.ndarray:
    """Group index (0 first frame, 1 boundary, 2 interior) of TokenClass values."""
    g = np.full(classes.shape, 2, dtype=np.int8)
    g[(classes == TokenClass.HEAD) | (classes == TokenClass.TAIL)] = 1
    g[classes == TokenClass.FIRST_FRAME] = 0
    return g


def token_magnitude(entry: Entry, sample: int = 0, channel: Optional[int] = None) -> np.ndarray:
    """MA magnitude [T, P] of one batch row: max |h| over tracked channels, or ``channel``'s |h|."""
    mag = entry.mag[sample]  # [T, P, K]
    if channel is None:
        all_nan = torch.isnan(mag).all(-1)
        out = torch.nan_to_num(mag, nan=-1.0).amax(-1)
        out[all_nan] = float("nan")
        return out.numpy()
    hits = (entry.channels == int(channel)).nonzero().reshape(-1)
    if hits.numel() == 0:
        raise ValueError(f"channel {channel} was not tracked (tracked: {entry.channels.tolist()}).")
    return mag[..., int(hits[0])].numpy()


def group_means(values: np.ndarray, groups: np.ndarray) -> Dict[str, Optional[float]]:
    """Mean of ``values`` per group (None where a group has no recorded token)."""
    out = {}
    for i, name in enumerate(GROUPS):
        v = values[(groups == i) & ~np.isnan(values)]
        out[name] = float(v.mean()) if v.size else None
    return out


def ratios_of(means: Dict[str, Optional[float]]) -> Dict[str, Optional[float]]:
    def r(a, b):
        x, y = means.get(a), means.get(b)
        return x / y if x is not None and y not in (None, 0.0) else None

    return {"first_frame/interior": r("first_frame", "interior"), "boundary/interior": r("boundary", "interior"),
            "first_frame/boundary": r("first_frame", "boundary")}


def channel_ratios(run: RunRecording, block: int, prompt: Optional[int] = None) -> torch.Tensor:
    """Peak-to-mean ratio per channel of ``block``, max over recorded steps (and prompts): [D]."""
    rs = [e.ratios() for (b, _, c), e in run.entries.items() if b == block and (prompt is None or c == prompt)]
    if not rs:
        raise ValueError(f"block {block} has no recorded data (recorded blocks: {run.recorded_blocks()}).")
    return torch.stack(rs).amax(0)


def channel_peaks(run: RunRecording, block: int, prompt: Optional[int] = None) -> torch.Tensor:
    """Max |h| per channel of ``block`` over recorded steps and batch rows: [D]."""
    ps = [e.peak.amax(0) for (b, _, c), e in run.entries.items() if b == block and (prompt is None or c == prompt)]
    return torch.stack(ps).amax(0)


def detect_channels(ratios: torch.Tensor, threshold: float, top_k: int) -> List[Tuple[int, float]]:
    """(channel, ratio) of the top_k channels at or above ``threshold``, strongest first."""
    k = min(int(top_k), ratios.numel())
    top, idx = torch.topk(ratios, k)
    return [(int(i), float(r)) for r, i in zip(top.tolist(), idx.tolist()) if r >= float(threshold)]


def hierarchy_matrix(run: RunRecording, prompt: int, sample: int = 0, spec: Optional[BoundarySpec] = None,
                     channel: Optional[int] = None) -> Tuple[np.ndarray, List[int], List[int]]:
    """Mean MA magnitude per group for every recorded (block, step): float [3, n_blocks, n_steps]
    (NaN where nothing was recorded), with the block and step labels."""
    blocks, steps = run.recorded_blocks(), run.recorded_steps()
    groups = class_groups(kept_classes(run, spec))
    out = np.full((3, len(blocks), len(steps)), np.nan)
    for (b, s, c), e in run.entries.items():
        if c != prompt:
            continue
        try:
            m = group_means(token_magnitude(e, sample, channel), groups)
        except ValueError:
            continue
        for gi, name in enumerate(GROUPS):
            if m[name] is not None:
                out[gi, blocks.index(b), steps.index(s)] = m[name]
    return out, blocks, steps


def steering_arrays(run: RunRecording, entry: Entry, sample: int = 0):
    """(token index [S] in the whole video, before [S, Ks], after [S, Ks], channels [Ks]) at the
    kept tokens STAS steered (signed values), or None when this entry holds no steering."""
    if not entry.has_steer:
        return None
    t, p = entry.steer_mask.shape
    sel = entry.steer_mask.reshape(-1).nonzero().reshape(-1)
    before = entry.steer_before[sample].reshape(t * p, -1)[sel]
    after = entry.steer_after[sample].reshape(t * p, -1)[sel]
    ok = ~torch.isnan(before).any(-1)
    sel = sel[ok]
    _, h, w = run.layout.grid
    token = (sel // p) * (h * w) + run.layout.positions()[sel % p]
    return token.numpy(), before[ok].numpy(), after[ok].numpy(), entry.steer_channels.numpy()


def pick(run: RunRecording, block: int = -1, step: int = -1, prompt: int = 0, sample: int = 0) -> Tuple[int, int, Entry]:
    """Resolve the visualizer's (block, step) choice to an entry, or a ValueError that lists what
    was recorded.  Negative values count from the end of what was recorded, as Python indices do
    (-1 = the last recorded block / step), the same meaning ``-1`` has on the MA Recorder."""
    blocks, prompts = run.recorded_blocks(), run.recorded_prompts()
    if not run.entries:
        notes = "; ".join(f"{k} ({v}x)" for k, v in run.notes.items()) or "no model call fell in the recorded steps"
        raise ValueError(f"the run recorded nothing ({notes}). Check the MA Recorder's blocks and steps.")
    if prompt not in prompts:
        raise ValueError(f"prompt {PROMPT_NAMES.get(prompt, prompt)!r} was not recorded (recorded: "
                         f"{[PROMPT_NAMES.get(c, c) for c in prompts]}); set 'record' on the MA Recorder.")
    b = _from_end(blocks, block)
    if b not in blocks:
        raise ValueError(f"block {block} was not recorded (recorded blocks: {blocks}); pick one of them "
                         "(-1 = the last recorded block).")
    s_avail = sorted(s for (bb, s, c) in run.entries if bb == b and c == prompt)
    s = _from_end(s_avail, step)
    if s not in s_avail:
        raise ValueError(f"step {step} was not recorded for block {b} (recorded steps: {s_avail}); pick one "
                         "(-1 = the last recorded step).")
    if not 0 <= sample < run.layout.batch:
        raise ValueError(f"sample {sample} does not exist: the batch has {run.layout.batch} (valid 0-{run.layout.batch - 1}).")
    return b, s, run.entries[(b, s, prompt)]


def _from_end(recorded: List[int], index: int) -> Optional[int]:
    """A non-negative index as it is; a negative one counted from the end of ``recorded``."""
    if index >= 0:
        return index
    return recorded[index] if -len(recorded) <= index else None


def summarize(run: RunRecording, block: int = -1, step: int = -1, prompt: int = 0, sample: int = 0,
              spec: Optional[BoundarySpec] = None, threshold: float = 50.0, top_k: int = 8,
              channel: Optional[int] = None) -> Dict[str, Any]:
    """Everything the text summary and the JSON export say, as plain Python values."""
    b, s, e = pick(run, block, step, prompt, sample)
    lay = run.layout
    groups = class_groups(kept_classes(run, spec))
    means = group_means(token_magnitude(e, sample, channel), groups)
    detected = {}
    for bb in run.recorded_blocks():
        rat = channel_ratios(run, bb)
        detected[bb] = {"channels": detect_channels(rat, threshold, top_k),
                        "best": detect_channels(rat, -math.inf, 1)[0]}
    steer = None
    arr = steering_arrays(run, e, sample)
    if arr is not None and arr[0].size:
        _, before, after, sch = arr
        steer = {"channels": [int(c) for c in sch], "tokens": int(before.shape[0]),
                 "mean_abs_before": float(np.abs(before).mean()), "mean_abs_after": float(np.abs(after).mean())}
    return {
        "family": lay.family, "model": lay.model, "hidden_size": lay.hidden_size, "n_blocks": lay.n_blocks,
        "latent_shape": list(lay.latent_shape), "grid": list(lay.grid), "batch": lay.batch,
        "steps_in_run": len(lay.sigmas) - 1, "recorded_blocks": run.recorded_blocks(),
        "recorded_steps": run.recorded_steps(), "recorded_prompts": [PROMPT_NAMES.get(c, c) for c in run.recorded_prompts()],
        "token_stride": lay.stride, "kept_tokens": lay.grid[0] * lay.n_positions,
        "shown": {"block": b, "step": s, "sigma": lay.sigmas[s], "prompt": PROMPT_NAMES.get(prompt, prompt),
                  "sample": sample, "channel": "max over tracked" if channel is None else f"channel {int(channel)}",
                  "view": e.view, "tracked_channels": [int(c) for c in e.channels.tolist()]},
        "threshold": float(threshold),
        "detected": {str(k): {"channels": [[c, r] for c, r in v["channels"]], "best": list(v["best"])}
                     for k, v in detected.items()},
        "group_means": means, "ratios": ratios_of(means), "steering": steer,
        "any_steering": any(x.has_steer for x in run.entries.values()),
        "notes": dict(run.notes), "recorded_mb": run.nbytes / 2 ** 20,
    }


def _f(x: Optional[float], fmt: str = "{:.4g}") -> str:
    return "n/a" if x is None else fmt.format(x)


def summary_text(d: Dict[str, Any]) -> str:
    """Human-readable form of ``summarize``'s dict (the visualizer's STRING output)."""
    sh = d["shown"]
    t, h, w = d["grid"]
    lines = [
        f"MA recording: {d['family']} ({d['model']}), hidden size {d['hidden_size']}, {d['n_blocks']} blocks; "
        f"latent {'x'.join(map(str, d['latent_shape']))} -> {t}x{h}x{w} tokens, {d['steps_in_run']} steps.",
        f"Recorded blocks {d['recorded_blocks']}, steps {d['recorded_steps']}, prompts {d['recorded_prompts']}; "
        f"{d['kept_tokens']} of {t * h * w} tokens per call (stride {d['token_stride']}); {d['recorded_mb']:.2f} MB.",
        f"Detected MA channels (peak |h| / mean |h| >= {d['threshold']:g}):",
    ]
    for b, v in d["detected"].items():
        if v["channels"]:
            chans = ", ".join(f"ch {c} {r:.1f}x" for c, r in v["channels"])
        else:
            c, r = v["best"]
            chans = f"none (strongest: ch {c} at {r:.1f}x)"
        lines.append(f"  block {b}: {chans}")
    m, r = d["group_means"], d["ratios"]
    lines += [
        f"Mean MA magnitude, block {sh['block']} step {sh['step']} (sigma {sh['sigma']:.4g}), {sh['prompt']}, sample "
        f"{sh['sample']}, {sh['channel']} (channels {sh['tracked_channels']}), {sh['view']}:",
        f"  first frame {_f(m['first_frame'])} | boundary {_f(m['boundary'])} | interior {_f(m['interior'])}",
        f"  first/interior {_f(r['first_frame/interior'], '{:.2f}x')} | boundary/interior "
        f"{_f(r['boundary/interior'], '{:.2f}x')} | first/boundary {_f(r['first_frame/boundary'], '{:.2f}x')}",
    ]
    st = d["steering"]
    if st:
        lines.append(f"STAS steering here: channels {st['channels']}, {st['tokens']} kept tokens steered, mean |h| "
                     f"{st['mean_abs_before']:.4g} before -> {st['mean_abs_after']:.4g} after.")
    elif d["any_steering"]:
        lines.append("STAS steering: none at this block/step (other blocks or steps were steered).")
    else:
        lines.append("STAS steering: none recorded (unpatched model, or outside STAS's blocks/steps/prompts).")
    for note, n in d["notes"].items():
        lines.append(f"Note: {note} ({n}x).")
    return "\n".join(lines)


def profile_from_run(run: RunRecording, threshold: float = 50.0, top_k: int = 4,
                     blocks: Optional[Sequence[int]] = None) -> MAProfile:
    """An MA profile of the recorded model: per recorded block, the channels at or above
    ``threshold`` (at most ``top_k``) and their peak |h| as reference magnitudes.

    Raises ValueError when a block has no channel above the threshold: a profile that steers
    nothing would be a silent no-op."""
    lay = run.layout
    chans, ref, weak = {}, {}, []
    for b in (blocks if blocks is not None else run.recorded_blocks()):
        rat = channel_ratios(run, b)
        found = detect_channels(rat, threshold, top_k)
        if not found:
            weak.append((b, detect_channels(rat, -math.inf, 1)[0]))
            continue
        cs = tuple(sorted(c for c, _ in found))
        peaks = channel_peaks(run, b)
        chans[b] = cs
        ref[b] = tuple(float(peaks[c]) for c in cs)
    if weak:
        desc = ", ".join(f"block {b}: best ch {c} at {r:.1f}x" for b, (c, r) in weak)
        raise ValueError(f"no massive-activation channel reaches {threshold:g}x in {desc}. Lower the threshold, or "
                         "record blocks where massive activations exist (usually every block after the first few).")
    return MAProfile(lay.family, lay.hidden_size, lay.n_blocks, chans, ref)


def json_safe(x: Any) -> Any:
    """``x`` with NaN/inf replaced by None and tuples by lists (strict JSON, also for the frontend)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return json_safe(x.item())
    return x


def export_run(run: RunRecording, base_path: str, summary: Dict[str, Any]) -> Tuple[str, str]:
    """Write ``base_path``.safetensors (every recorded tensor, layout in its metadata; loads back
    with ``RunRecording.load``) and ``base_path``.json (the summary and the layout)."""
    import json

    st, js = base_path + ".safetensors", base_path + ".json"
    run.save(st)
    doc = {"format": "comfyui-stas/ma-summary/1", "recording": st.rsplit("/", 1)[-1],
           "layout": run.layout.to_json(), "summary": summary}
    with atomic_write(js) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(json_safe(doc), f, indent=1, allow_nan=False)
    return st, js
