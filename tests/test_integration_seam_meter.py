"""Temporal Seam Meter in a real ComfyUI: registered as ComfyUI loads the pack, run on what a
real-class video VAE (ComfyUI's own WanVAE, tiny random weights) decodes from latents sampled
by a tiny Wan without and with STAS, and its errors raised at node execution.
(The side-by-side example workflow runs it end to end in a server: tests/test_workflows.py.)"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stas_harness import comfy_env as ce
from stas_harness.models import tiny_wan

pytestmark = pytest.mark.integration


def run(pk, images, images_b=None, tc=4, causal=True, flag=1.5, motion=True, size=320):
    out = pk.meter.execute(images=images, images_b=images_b, temporal_compression=tc, causal_first_frame=causal,
                           flag_contrast=flag, motion_compensation=motion, analysis_size=size)
    return out.result


def tiny_wan_vae_decode(latent: torch.Tensor) -> torch.Tensor:
    """ComfyUI's WanVAE class (causal, decodes latent frame by latent frame: real chunk seams) at
    a tiny width with random weights; IMAGE layout out, as VAE Decode gives it."""
    import comfy.ldm.wan.vae as wv
    vae = wv.WanVAE(dim=8, z_dim=16).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in vae.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        x = vae.decode(latent.float())  # [B, 3, T, H, W] in about -1..1
    return ((x[0].clamp(-1, 1) + 1) / 2).permute(1, 2, 3, 0).contiguous()


def test_registered_with_the_documented_schema(pk):
    import nodes as comfy_nodes
    assert "STASTemporalSeamMeter" in comfy_nodes.NODE_CLASS_MAPPINGS
    schema = pk.meter.define_schema()
    assert schema.category == "model_patches/stas" and schema.display_name == "Temporal Seam Meter (STAS)"
    assert [o.display_name for o in schema.outputs] == ["plot", "summary", "seam_ratio"]
    assert all(i.tooltip for i in schema.inputs)


def test_on_decoded_tiny_wan_without_and_with_stas(pk):
    model = tiny_wan()
    lat = ce.latent(t=3)  # 3 latent frames -> 9 pixel frames of 64x64
    plain = ce.sample(model, lat, steps=3)
    steered = ce.sample(ce.stas(model, blocks="2", channels="0,1", end_percent=1.0), lat, steps=3)
    a, b = tiny_wan_vae_decode(steered), tiny_wan_vae_decode(plain)
    assert a.shape == (9, 64, 64, 3) and not torch.equal(a, b)
    img, text, ratio = run(pk, a, b)
    assert img.shape[0] == 1 and img.shape[-1] == 3 and img.dtype == torch.float32
    assert isinstance(ratio, float) and np.isfinite(ratio) and ratio > 0
    assert f"A (images): seam ratio {ratio:.3f}" in text and "B (images_b): seam ratio" in text
    assert "2 seam pairs (frames 0|1, 4|5)" in text and "A - B: seam ratio" in text
    alone = run(pk, a)
    assert alone[2] == ratio and "B (images_b)" not in alone[1]


def test_piecewise_constant_decoder_output_flags_every_seam(pk):
    """What tests/comfy_test_nodes' stand-in VAE decodes (each latent frame repeated): within-chunk
    pairs are identical, so every seam stands out and the ratio stays finite."""
    frames = torch.rand(3, 16, 16, 3)[torch.tensor([0, 1, 1, 1, 1, 2, 2, 2, 2])]
    img, text, ratio = run(pk, frames)
    assert ratio > 10 and np.isfinite(ratio)
    assert "standing out (contrast >= 1.5): 2 of 2" in text


@pytest.mark.parametrize("shape_a,shape_b,kw,msg", [
    ((9, 32, 32, 3), None, dict(), None),
    ((4, 32, 32, 3), None, dict(), r"^Temporal Seam Meter: 4 frame\(s\) hold no chunk seam"),
    ((10, 32, 32, 3), None, dict(), r"^Temporal Seam Meter: 10 frames do not fit temporal_compression 4"),
    ((9, 32, 32, 3), None, dict(causal=False), r"^Temporal Seam Meter: 9 frames do not fit .* causal_first_frame off"),
    ((9, 32, 32, 3), (13, 32, 32, 3), dict(), r"^Temporal Seam Meter: images_b has 13 frames of 32x32 but images has 9"),
    ((9, 32, 32, 3), (9, 32, 48, 3), dict(), r"^Temporal Seam Meter: images_b has 9 frames of 48x32"),
])
def test_errors_name_the_node_and_the_fix(pk, shape_a, shape_b, kw, msg):
    a = torch.rand(shape_a)
    b = torch.rand(shape_b) if shape_b else None
    if msg is None:
        run(pk, a, b, **kw)
        return
    with pytest.raises(ValueError, match=msg):
        run(pk, a, b, **kw)
