"""Unit tests of stas_core.seams (Temporal Seam Meter) on synthetic videos.

The videos are sums of random sinusoids evaluated at moving coordinates, so motion (pans,
sub-pixel ones included) is exact; a "seam" is a per-chunk pattern that is constant inside a
VAE chunk and changes between chunks, which is how a chunk-wise decoder's artefacts behave.
"""
import numpy as np
import pytest
import torch

from stas_core import plot
from stas_core.seams import FLOOR, SeamOptions, measure, seam_layout, series_for_plot, summary_text

N, H, W = 33, 72, 128  # 1 + 4 * 8 frames: 8 seams


def texture(n=N, h=H, w=W, pan=(0.0, 0.0), blob_speed=1.5, seed=0, waves=12, noise=0.0):
    """Smooth textured video [n, h, w, 3]: random sinusoids panned by ``pan`` px/frame (dy, dx),
    plus a soft blob moving across it at ``blob_speed`` px/frame (ordinary local motion), plus
    independent per-frame noise of standard deviation ``noise`` (grain)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64)[:, None, None]
    y = torch.arange(h, dtype=torch.float64)[None, :, None]
    x = torch.arange(w, dtype=torch.float64)[None, None, :]
    yy, xx = y - pan[0] * t, x - pan[1] * t
    out = torch.zeros(n, h, w, 3, dtype=torch.float64)
    for _ in range(waves):
        fy, fx = (torch.rand(2, generator=g, dtype=torch.float64) - 0.5) * 0.5
        ph = torch.rand(1, generator=g, dtype=torch.float64) * 6.3
        amp = torch.rand(3, generator=g, dtype=torch.float64) * 0.06
        out += torch.sin(fy * yy + fx * xx + ph)[..., None] * amp
    cy, cx = h / 2, 10 + blob_speed * t
    blob = torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 8.0 ** 2))
    out += blob[..., None] * torch.tensor([0.3, 0.1, -0.1], dtype=torch.float64)
    out += torch.randn(out.shape, generator=g, dtype=torch.float64) * noise
    return (0.5 + out).clamp(0, 1).float()


def chunk_pattern(n=N, h=H, w=W, amp=0.02, offset=0, seed=1):
    """A fixed random low-frequency pattern per chunk of 4 frames (chunk 0 = frame 0 alone),
    chunks shifted by ``offset`` frames: a jump wherever the chunk index changes."""
    g = torch.Generator().manual_seed(seed)
    idx = (torch.arange(n) + 3 - offset).clamp(min=0) // 4
    k = int(idx.max()) + 1
    base = torch.randn(k, 3, h // 8, w // 8, generator=g)
    pat = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    pat = pat / pat.abs().mean() * amp
    return pat[idx].permute(0, 2, 3, 1)


# -- layout and errors -------------------------------------------------------------------------

def test_layout_causal_and_not():
    lay = seam_layout(13, 4, True)
    assert np.nonzero(lay.is_seam)[0].tolist() == [0, 4, 8]   # pairs 0|1, 4|5, 8|9
    lay = seam_layout(12, 4, False)
    assert np.nonzero(lay.is_seam)[0].tolist() == [3, 7]      # pairs 3|4, 7|8


@pytest.mark.parametrize("n,c,causal,msg", [
    (4, 4, True, r"4 frame\(s\) hold no chunk seam.*at least 5 frames"),
    (7, 4, False, r"at least 8 frames"),
    (80, 4, True, r"80 frames do not fit temporal_compression 4.*1 \+ 4k frames \(nearest: 77 or 81\)"),
    (162, 4, True, r"do not fit.*a batch of several videos"),
    (81, 4, False, r"4k frames \(nearest: 80 or 84\)"),
    (9, 1, True, r"temporal_compression must be at least 2"),
])
def test_layout_errors(n, c, causal, msg):
    with pytest.raises(ValueError, match=msg):
        seam_layout(n, c, causal)


def test_bad_shape():
    with pytest.raises(ValueError, match=r"expected video frames \[frames, height, width, 3\]"):
        measure(torch.zeros(9, 8, 8))


# -- the four cases of the issue ------------------------------------------------------------------

def test_smooth_motion_ratio_near_one():
    r = measure(texture(pan=(0.3, 0.6), blob_speed=2.0, noise=0.01))
    assert 0.9 < r.seam_ratio < 1.1, r.seam_ratio
    assert not r.flagged.any(), r.contrast
    assert r.within_mean > 3 * FLOOR  # the motion is visible, the ratio is not 1 by the floor alone


def test_jump_at_every_seam_is_flagged():
    clean, seamy = texture(), (texture() + chunk_pattern()).clamp(0, 1)
    a, b = measure(seamy), measure(clean)
    assert a.seam_ratio > 1.5 * b.seam_ratio and a.seam_ratio > 1.5, (a.seam_ratio, b.seam_ratio)
    assert a.flagged.all(), a.contrast
    assert a.flicker < b.flicker  # more change per pair: VBench-style score drops


def test_jump_elsewhere_is_not_a_seam():
    r = measure((texture() + chunk_pattern(offset=2)).clamp(0, 1))  # jumps at pairs 2|3, 6|7, ...
    assert r.seam_ratio < 1.0, r.seam_ratio
    assert not r.flagged.any(), r.contrast
    assert r.outlier_pair % 4 == 2 and r.outlier_contrast > 1.5
    assert "largest within-chunk change: " in summary_text(r)


@pytest.mark.parametrize("pan", [(0.0, 3.0), (1.0, -2.0), (0.0, 1.37), (0.0, 0.45)])
def test_global_pan_does_not_raise_the_ratio(pan):
    r = measure(texture(pan=pan, blob_speed=0.0))
    assert 0.9 < r.seam_ratio < 1.1, r.seam_ratio
    assert not r.flagged.any()


def test_pan_is_compensated_so_small_seams_still_show():
    """A fast integer pan dominates the plain difference; aligned, a small seam pattern stands out."""
    vid = (texture(pan=(0.0, 4.0), blob_speed=0.0, waves=24) + chunk_pattern(amp=0.01)).clamp(0, 1)
    on, off = measure(vid), measure(vid, SeamOptions(motion_compensation=False))
    assert on.seam_ratio > 1.5 and on.flagged.sum() >= 7, on.contrast
    assert off.seam_ratio < on.seam_ratio
    dy, dx = on.shifts[:, 0], on.shifts[:, 1]  # the pan found, in full-resolution pixels, to sub-pixel
    assert abs(np.median(dx) - 4) < 0.1 and np.allclose(dx, 4, atol=0.35) and np.allclose(dy, 0, atol=0.35)


def test_subpixel_pan_at_the_analysis_size_is_compensated():
    """3 px/frame at 4x the analysis size is 0.75 px there: found and aligned to sub-pixel."""
    big = (texture(h=144, w=256, pan=(0.0, 3.0), blob_speed=0.0, waves=24) + chunk_pattern(h=144, w=256, amp=0.01))
    on = measure(big.clamp(0, 1), SeamOptions(analysis_size=64))
    off = measure(big.clamp(0, 1), SeamOptions(analysis_size=64, motion_compensation=False))
    assert abs(np.median(on.shifts[:, 1]) - 3) < 0.3, on.shifts[:, 1]
    assert on.within_mean < 0.5 * off.within_mean and on.seam_ratio > off.seam_ratio


def test_brightness_ramp_does_not_raise_the_ratio():
    ramp = torch.linspace(0, 0.2, N)[:, None, None, None]
    r = measure((texture() * 0.8 + ramp).clamp(0, 1))
    assert 0.9 < r.seam_ratio < 1.1, r.seam_ratio
    assert not r.flagged.any()


def test_brightness_pulse_at_seams_is_not_discounted():
    """A global brightness step at every chunk seam (the typical VAE seam artefact) is measured."""
    step = ((torch.arange(N) + 3) // 4 % 2).float()[:, None, None, None] * 0.02
    r = measure((texture() + step).clamp(0, 1))
    assert r.seam_ratio > 1.5 and r.flagged[1:].all(), r.contrast


# -- details -----------------------------------------------------------------------------------

def test_identical_frames_and_piecewise_constant_video():
    still = measure(texture(blob_speed=0.0))
    assert still.seam_ratio == pytest.approx(1.0) and still.flicker == pytest.approx(1.0)
    # what a decoder that repeats each latent frame 4 times gives (the tests' stand-in VAE)
    lat = torch.rand(9, 8, 8, 3)
    idx = ((torch.arange(N) + 3) // 4).clamp(max=8)
    r = measure(lat[idx].repeat_interleave(4, 1).repeat_interleave(4, 2))
    assert np.isfinite(r.seam_ratio) and r.seam_ratio > 10 and r.flagged.all()
    assert (r.diff[~r.layout.is_seam] == 0).all()


def test_non_causal_layout_and_other_compression():
    n = 32
    pat = chunk_pattern(n=n, offset=3)  # chunks of 4 from frame 0: jumps at 3|4, 7|8, ...
    r = measure((texture(n=n) + pat).clamp(0, 1), SeamOptions(causal_first_frame=False))
    assert r.seam_pairs.tolist() == [3, 7, 11, 15, 19, 23, 27] and r.flagged.all()
    r8 = measure(texture(n=33), SeamOptions(temporal_compression=8))
    assert r8.seam_pairs.tolist() == [0, 8, 16, 24]


def test_analysis_resolution_and_full_resolution_flicker():
    vid = texture(h=144, w=256)
    r = measure(vid, SeamOptions(analysis_size=64))
    assert r.analysis == (36, 64) and r.size == (144, 256)
    plain = (vid[1:] - vid[:-1]).abs().mean(dim=(1, 2, 3)).double().numpy()
    assert np.allclose(r.raw_mae, plain, atol=1e-6)
    assert r.flicker == pytest.approx(1 - plain.mean(), abs=1e-6)


def test_dtype_and_alpha_channel():
    vid = texture()
    rgba = torch.cat([vid, torch.ones(N, H, W, 1)], -1)
    a, b = measure(vid), measure(rgba.half())
    assert a.seam_ratio == pytest.approx(b.seam_ratio, rel=0.02)


def test_summary_and_plot():
    a = measure((texture() + chunk_pattern()).clamp(0, 1))
    b = measure(texture())
    text = summary_text(a, b)
    assert "A (images): seam ratio" in text and "B (images_b): seam ratio" in text
    assert "A's chunk seams stand out more than B's." in text
    assert "temporal flickering (VBench-style" in text
    vals, flags = series_for_plot([a, b])
    img = plot.seam_curve_image(vals, a.layout.is_seam, flags, ["A", "B"], "t")
    assert img.shape == (360, 1024, 3) and img.dtype == np.float32
    assert (np.abs(img - plot.FLAG_C).sum(-1) < 0.05).any()           # flagged seams ringed
    for c in plot.SERIES_COLOURS:                                        # both curves drawn
        assert (np.abs(img - c).sum(-1) < 0.05).sum() > 100
    one = plot.seam_curve_image(vals[1:], a.layout.is_seam, flags[1:], ["B"], "t")
    assert not (np.abs(one - plot.FLAG_C).sum(-1) < 0.05).any()        # nothing flagged, no ring


def test_shifted_difference_batched_paths_agree():
    """The resampling path (many distinct shifts, or sub-pixel ones) equals plain slicing."""
    from stas_core.seams import _mad_at
    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(12, 3, 20, 30, generator=g), torch.rand(12, 3, 20, 30, generator=g)
    shift = torch.randint(-4, 5, (12, 2), generator=g)
    assert len(torch.unique(shift, dim=0)) > 8
    want = []
    for p, (dy, dx) in enumerate(shift.tolist()):
        bb = b[p, :, max(dy, 0):20 + min(dy, 0), max(dx, 0):30 + min(dx, 0)]
        aa = a[p, :, max(-dy, 0):20 - max(dy, 0), max(-dx, 0):30 - max(dx, 0)]
        want.append(float((bb - aa).abs().mean()))
    assert np.allclose(_mad_at(a, b, shift).numpy(), want, atol=1e-6)                # grid_sample, nearest
    assert np.allclose(_mad_at(a, b, shift.float()).numpy(), want, atol=1e-5)        # bilinear at whole pixels
    assert np.allclose(_mad_at(a[:3], b[:3], shift[:3]).numpy(), want[:3], atol=1e-6)  # slices
