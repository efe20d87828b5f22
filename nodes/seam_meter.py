"""Temporal Seam Meter: decoded frames in; how much they change across the video VAE's chunk
seams (where STAS acts) compared with inside the chunks, as a chart, a summary and a number.
The maths is stas_core.seams; this node only reads its inputs and words the errors."""
from __future__ import annotations

import numpy as np
import torch
from comfy_api.latest import io

from ..stas_core import plot, seams

NAME = "Temporal Seam Meter"


def _image(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]


class TemporalSeamMeter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="STASTemporalSeamMeter",
            display_name="Temporal Seam Meter (STAS)",
            category="model_patches/stas",
            description="Measures how much decoded frames change across the video VAE's chunk seams (frames 4k | 4k+1) "
                        "versus inside the chunks, discounting global motion. Optionally compares a second render.",
            inputs=[
                io.Image.Input("images", tooltip="Decoded frames of one video, straight from VAE Decode."),
                io.Image.Input("images_b", optional=True,
                               tooltip="Second render of the same size to compare as A - B (none = A only)."),
                io.Int.Input("temporal_compression", default=4, min=2, max=16,
                             tooltip="Pixel frames per latent frame of the video VAE (4 for Wan)."),
                io.Boolean.Input("causal_first_frame", default=True,
                                 tooltip="The first latent frame decodes to one pixel frame (a causal VAE)."),
                io.Float.Input("flag_contrast", default=1.5, min=1.0, max=100.0, step=0.05,
                               tooltip="Seam to in-chunk difference ratio at which a seam is ringed red."),
                io.Boolean.Input("motion_compensation", default=True,
                                 tooltip="Align each frame pair by its global shift (off = raw differences)."),
                io.Int.Input("analysis_size", default=320, min=32, max=4096, step=16,
                             tooltip="Long side in pixels that frames shrink to for seam differences."),
            ],
            outputs=[
                io.Image.Output(display_name="plot", tooltip="Difference per frame pair, standing-out seams ringed red."),
                io.String.Output(display_name="summary", tooltip="Seam ratio, per-seam contrast and a flicker score, as text."),
                io.Float.Output(display_name="seam_ratio", tooltip="Seam difference over in-chunk difference (1 = seams invisible)."),
            ],
        )

    @classmethod
    def execute(cls, images, temporal_compression, causal_first_frame, flag_contrast, motion_compensation,
                analysis_size, images_b=None) -> io.NodeOutput:
        if images_b is not None and tuple(images_b.shape[:3]) != tuple(images.shape[:3]):
            raise ValueError(f"{NAME}: images_b has {_describe(images_b)} but images has {_describe(images)}; "
                             "connect two renders of the same length and size (same seed and settings), or disconnect images_b.")
        opts = seams.SeamOptions(temporal_compression=int(temporal_compression),
                                 causal_first_frame=bool(causal_first_frame), flag_contrast=float(flag_contrast),
                                 motion_compensation=bool(motion_compensation), analysis_size=int(analysis_size))
        try:
            a = seams.measure(images, opts)
            b = seams.measure(images_b, opts) if images_b is not None else None
        except ValueError as e:
            raise ValueError(f"{NAME}: {e}") from None
        reports = [a] if b is None else [a, b]
        names = [f"A images (seam ratio {a.seam_ratio:.2f})"]
        if b is not None:
            names.append(f"B images_b ({b.seam_ratio:.2f})")
        vals, flags = seams.series_for_plot(reports)
        h, w = a.size
        title = (f"Temporal seam meter: frame-pair difference, {a.layout.frames} frames {w}x{h}, "
                 f"chunks of {a.layout.temporal_compression}")
        img = plot.seam_curve_image(vals, a.layout.is_seam, flags, names, title)
        return io.NodeOutput(_image(img), seams.summary_text(a, b), float(a.seam_ratio))


def _describe(t: torch.Tensor) -> str:
    s = list(t.shape)
    return f"{s[0]} frames of {s[2]}x{s[1]}" if len(s) == 4 else f"shape {s}"
