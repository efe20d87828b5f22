"""Boundary Mask Builder: which tokens STAS steers, with a preview on a real latent."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..stas_core.layout import UNITS, BoundarySpec, grid_from_latent
from ..stas_core.plot import mask_preview_figure
from .types import StasMask, named_errors


def build_spec(first_frame: bool, boundaries: bool, head: float, tail: float, unit: str) -> BoundarySpec:
    if unit == "fraction" and max(head, tail) > 1.0:
        raise ValueError(f"Boundary Mask Builder: with unit 'fraction', head and tail are shares of a frame (0..1), "
                         f"got head {head:g} and tail {tail:g}. Use widths up to 1.0, or the unit 'rows' or 'tokens'.")
    with named_errors("Boundary Mask Builder"):
        spec = BoundarySpec(bool(first_frame), bool(boundaries), float(head), float(tail), unit)
    if not spec.first_frame and (not spec.boundaries or (spec.head == 0 and spec.tail == 0)):
        raise ValueError("Boundary Mask Builder: this mask selects no token, so STAS would do nothing. "
                         "Turn on first_frame, or boundaries with a head or tail width above 0.")
    return spec


class BoundaryMaskBuilder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="STASBoundaryMaskBuilder",
            display_name="Boundary Mask Builder (STAS)",
            category="model_patches/stas",
            description="Choose which tokens STAS steers: the first latent frame and/or the head and tail "
                        "token rows of every later latent frame. Connect to STAS Model Patch's mask input.",
            inputs=[
                io.Boolean.Input("first_frame", default=True,
                                 tooltip="Steer every token of the first latent frame."),
                io.Boolean.Input("boundaries", default=True,
                                 tooltip="Steer the head and tail tokens of every later latent frame."),
                io.Float.Input("head", default=1.0, min=0.0, max=4096.0, step=1.0,
                               tooltip="Head width of each later latent frame, in unit (0 = no head)."),
                io.Float.Input("tail", default=1.0, min=0.0, max=4096.0, step=1.0,
                               tooltip="Tail width of each later latent frame, in unit (0 = no tail)."),
                io.Combo.Input("unit", options=list(UNITS), default="rows",
                               tooltip="Unit of head and tail: token rows, single tokens or a 0..1 fraction."),
                io.Latent.Input("latent", optional=True,
                                tooltip="Video LATENT to preview the mask on (none = blank preview)."),
                io.Int.Input("patch_t", default=1, min=1, max=8, optional=True,
                             tooltip="Temporal patch size of the model, for the preview only."),
                io.Int.Input("patch_hw", default=2, min=1, max=16, optional=True,
                             tooltip="Spatial patch size of the model, for the preview only."),
            ],
            outputs=[
                StasMask.Output(display_name="mask", tooltip="Steering mask for STAS Model Patch."),
                io.Image.Output(display_name="preview",
                                tooltip="One tile per latent frame with the steered tokens coloured."),
            ],
        )

    @classmethod
    def execute(cls, first_frame, boundaries, head, tail, unit, latent=None, patch_t=1, patch_hw=2) -> io.NodeOutput:
        spec = build_spec(first_frame, boundaries, head, tail, unit)
        if latent is None:
            preview = torch.zeros(1, 64, 64, 3)
        else:
            samples = latent["samples"]
            samples = samples.unbind()[0] if getattr(samples, "is_nested", False) else samples  # LTX-2: (video, audio)
            if samples.dim() != 5:
                raise ValueError(f"Boundary Mask Builder: the latent has shape {tuple(samples.shape)}, not a video "
                                 "latent [B, C, T, H, W]. Connect a video latent (Wan, HunyuanVideo, CogVideoX).")
            grid = grid_from_latent(tuple(samples.shape), (patch_t, patch_hw, patch_hw))
            preview = torch.from_numpy(mask_preview_figure(grid, spec))[None]
        return io.NodeOutput(spec, preview)
