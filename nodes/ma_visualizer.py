"""MA Visualizer: a recording (and the sampler's LATENT) in; profile, heatmaps, hierarchy and
steering images, a text summary, an optional export, and the in-node chart's data out."""
from __future__ import annotations

import os

import numpy as np
import torch
from comfy_api.latest import io

from ..stas_core import plot, stats
from ..stas_core.record import PROMPT_IDS, PROMPT_NAMES
from .types import StasMask, StasRecording

MAX_UI_POINTS = 65536
"""At most this many points go to the in-node chart (the recording itself is not thinned)."""


def parse_channel(text: str):
    text = (text or "").strip().lower()
    if text in ("", "max", "auto"):
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"MA Visualizer: channel must be 'max' or a channel index, got {text!r}: type max, or one "
                         "recorded channel index like 407.") from None


def _image(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]


def _round(v: float):
    return None if not np.isfinite(v) else float(f"{v:.5g}")


def chart_data(run, block: int, step: int, prompt: int, sample: int, channel, values: np.ndarray,
               classes: np.ndarray, log: bool, means) -> dict:
    """What web/stas_visualizer.js draws: kept-token values in (frame, position) order."""
    lay = run.layout
    t, nr, nc = lay.grid[0], len(lay.rows), len(lay.cols)
    ri, ci = list(range(nr)), list(range(nc))
    m = 1
    while t * len(ri) * len(ci) > MAX_UI_POINTS:  # thin kept rows/columns (keeping the last) for the websocket
        m += 1
        ri = sorted(set(range(0, nr, m)) | {nr - 1})
        ci = sorted(set(range(0, nc, m)) | {nc - 1})
    vals = values.reshape(t, nr, nc)[:, ri][:, :, ci]
    cls = classes.reshape(t, nr, nc)[:, ri][:, :, ci]
    return {
        "grid": list(lay.grid), "rows": [lay.rows[i] for i in ri], "cols": [lay.cols[i] for i in ci],
        "values": [_round(v) for v in vals.reshape(-1).tolist()],
        "classes": [int(c) for c in cls.reshape(-1).tolist()],
        "block": block, "step": step, "sigma": lay.sigmas[step], "prompt": PROMPT_NAMES.get(prompt, prompt),
        "sample": sample, "channel": "max" if channel is None else channel, "log": bool(log),
        "means": stats.json_safe(means), "model": lay.model, "family": lay.family,
    }


def _list(xs) -> str:
    return ", ".join(str(x) for x in xs) if xs else "none"


def _steered_blocks(run, prompt: int) -> list[int]:
    return sorted({b for (b, _, c), e in run.entries.items() if c == prompt and e.has_steer})


def _hierarchy_channels(run, prompt: int, blocks, channel) -> str:
    """The footnote that names the channels each row of the hierarchy shows."""
    if channel is not None:
        return f"channels shown: |h| of channel {channel} in every block"
    per = {}
    for (b, _, c), e in sorted(run.entries.items()):
        if c == prompt and b not in per:
            per[b] = [int(x) for x in e.channels.tolist()]
    if len({tuple(v) for v in per.values()}) == 1:
        return f"channels shown: max |h| over the recorded channels {_list(next(iter(per.values())))} in every block"
    return "channels shown: max |h| over each block's recorded channels: " + \
        " | ".join(f"block {b}: {_list(per.get(b, []))}" for b in blocks)


def figures_of(run, entry, b, s, c, prompt, sample, mask, ch, values, classes, tracked, summary, log_scale):
    """The four figures of one view (token profile, frame heatmaps, block x step hierarchy, steering) and the
    texts drawn on each (``notes``: what the tests and the frontend read)."""
    lay = run.layout
    what = f"|h| of channel {ch}" if ch is not None else f"max |h| over channels {_list(tracked)}"
    head = f"block {b}, step {s} (sigma {lay.sigmas[s]:.3g}), {prompt}, sample {sample}, {entry.view}"
    notes = {k: [] for k in ("profile", "heatmaps", "hierarchy", "steering")}
    profile = plot.token_profile_image(values, classes, lay.positions().numpy(), lay.grid,
                                       f"MA magnitude per token: {head}", log=log_scale, y_label=what,
                                       notes=notes["profile"])
    heat = plot.frame_heatmaps_image(values.reshape(lay.grid[0], len(lay.rows), len(lay.cols)),
                                     f"MA magnitude per latent frame: {head}; {what}", log=log_scale,
                                     notes=notes["heatmaps"])
    mat, blocks, steps = stats.hierarchy_matrix(run, c, sample, mask, ch)
    hier = plot.hierarchy_image(mat, blocks, steps, f"mean MA magnitude by token group ({prompt}, sample {sample}, "
                                "log colour)", steered_blocks=_steered_blocks(run, c),
                                footnotes=[_hierarchy_channels(run, c, blocks, ch)], notes=notes["hierarchy"])
    arr = stats.steering_arrays(run, entry, sample)
    if arr is not None and arr[0].size:
        tok, before, after, sch = arr
        steer = plot.steering_image(tok, before, after, sch, lay.grid, f"STAS steering at block {b}, step {s}: "
                                    "|h| before vs after", notes=notes["steering"])
    else:
        msg = ("no STAS steering at this block and step (see the summary for the steered ones)"
               if summary["any_steering"] else
               "no STAS steering in this run (expected without STAS; with STAS, put the MA Recorder "
               "after STAS Model Patch)")
        steer = plot.steering_image(None, None, None, [], lay.grid, "STAS steering", message=msg,
                                    notes=notes["steering"])
    return (profile, heat, hier, steer), notes


class MAVisualizer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="STASMAVisualizer",
            display_name="MA Visualizer (STAS)",
            category="model_patches/stas",
            description="Shows what MA Recorder recorded: a per-token profile, per-frame heatmaps, a block x step grid, "
                        "values before vs after steering and a summary. Can also export them to the output folder.",
            is_output_node=True,
            inputs=[
                StasRecording.Input("recording", tooltip="The recording output of MA Recorder."),
                io.Latent.Input("latent", tooltip="The sampler's LATENT, which picks its run's recording."),
                io.Int.Input("block", default=-1, min=-4096, max=4096,
                             tooltip="Recorded block to show, as typed on the recorder (-1 = the last)."),
                io.Int.Input("step", default=0, min=-100000, max=100000,
                             tooltip="Recorded step to show (0 = the first, -1 = the last)."),
                io.Int.Input("sample", default=0, min=0, max=4096, tooltip="Batch item to show (0 = first)."),
                # shown as "pass"; the input id "chunk" is kept: saved workflows name it
                io.Combo.Input("chunk", display_name="pass", options=list(PROMPT_IDS), default="cond",
                               tooltip="CFG pass to show, as recorded by MA Recorder's record."),
                io.String.Input("channel", default="max",
                                tooltip="Magnitude per token: 'max' over the MA channels, or one recorded channel."),
                io.Float.Input("threshold", default=50.0, min=1.0, max=100000.0, step=1.0,
                               tooltip="Peak / mean |h| at which a channel counts as massive."),
                io.Boolean.Input("log_scale", default=False, tooltip="Logarithmic magnitude axis for the profile and heatmaps."),
                io.Boolean.Input("export", default=False,
                                 tooltip="Also save the recording and summary to the output folder (off = show only)."),
                io.String.Input("filename_prefix", default="stas/ma_recording",
                                tooltip="Export file name prefix, relative to the output folder."),
                StasMask.Input("mask", optional=True,
                               tooltip="Mask whose head and tail define the boundary tokens (none = one row each)."),
            ],
            outputs=[
                io.Image.Output(display_name="profile", tooltip="MA magnitude along the token index, coloured by token set."),
                io.Image.Output(display_name="heatmaps", tooltip="MA magnitude per latent frame, on one colour scale."),
                io.Image.Output(display_name="hierarchy", tooltip="Block x step grid of mean MA magnitude per token set."),
                io.Image.Output(display_name="steering", tooltip="STAS channels before and after steering (recorder after STAS Model Patch)."),
                io.String.Output(display_name="summary", tooltip="MA channels, their peak / mean ratios and the magnitude per token set."),
            ],
        )

    @classmethod
    def execute(cls, recording, latent, block, step, sample, chunk, channel, threshold, log_scale, export,
                filename_prefix, mask=None) -> io.NodeOutput:
        prompt = chunk  # the input's id is "chunk" (see define_schema)
        if prompt not in PROMPT_IDS:
            raise ValueError(f"MA Visualizer: pass must be one of {list(PROMPT_IDS)}, got {prompt!r}.")
        ch = parse_channel(channel)
        run = recording.run_for(latent["samples"])
        failed = [k for k in run.notes if k.startswith("recording failed")]
        if failed:
            raise ValueError(f"MA Visualizer: the recording of this run is incomplete ({failed[0]}). "
                             "Please report this with the workflow; sampling itself was not affected.")
        c = PROMPT_IDS[prompt]
        try:
            b, s, entry = stats.pick(run, block, step, c, sample)
            summary = stats.summarize(run, b, s, c, sample, mask, threshold, top_k=8, channel=ch)
            values = stats.token_magnitude(entry, sample, ch)
        except ValueError as e:
            raise ValueError(f"MA Visualizer: {e}") from None
        classes = stats.kept_classes(run, mask)
        tracked = [int(x) for x in entry.channels.tolist()]
        figures, notes = figures_of(run, entry, b, s, c, prompt, sample, mask, ch, values, classes, tracked, summary,
                                    log_scale)
        text = stats.summary_text(summary)
        if export:
            text += "\n" + cls._export(run, summary, filename_prefix)
        chart = chart_data(run, b, s, c, sample, ch, values, classes, log_scale, summary["group_means"])
        chart["summary"] = text
        chart["asked"] = {"block": block, "step": step}  # as typed: the chart says what -1 resolved to
        chart["view"] = entry.view
        chart["channels"] = tracked
        chart["figures"] = notes  # the texts drawn on the IMAGE outputs
        ui = {"stas_profile": [chart]}  # drawn by web/stas_visualizer.js inside this node
        return io.NodeOutput(*(_image(f) for f in figures), text, ui=ui)

    @staticmethod
    def _export(run, summary, filename_prefix: str) -> str:
        import folder_paths

        out_dir = folder_paths.get_output_directory()
        folder, name, counter, _, _ = folder_paths.get_save_image_path(filename_prefix, out_dir)
        os.makedirs(folder, exist_ok=True)
        st, js = stats.export_run(run, os.path.join(folder, f"{name}_{counter:05}_"), summary)
        return f"Exported: {st} and {js}"
