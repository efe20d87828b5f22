"""Unit tests of stas_core.blocks, .schedule, .profile and .plot."""
import math

import numpy as np
import pytest
import torch

from stas_core.blocks import parse_blocks
from stas_core.layout import BoundarySpec, TokenClass
from stas_core.plot import CLASS_COLOURS, mask_preview
from stas_core.profile import MAProfile
from stas_core.schedule import ALWAYS, BOUNDARY_SLACK, SigmaWindow


# -- blocks -------------------------------------------------------------------------------

@pytest.mark.parametrize("text,n,expect", [
    ("middle", 30, [15]),            # the paper's block 15 of Wan2.1-1.3B
    ("MID", 4, [2]),
    ("middle", 1, [0]),
    ("15", 30, [15]),
    ("10-12", 30, [10, 11, 12]),
    ("0,5,9", 30, [0, 5, 9]),
    ("9, 0 ,5,5", 30, [0, 5, 9]),
    ("all", 3, [0, 1, 2]),
    ("-1", 30, [29]),
    ("-3--1", 30, [27, 28, 29]),
    ("0;2", 4, [0, 2]),
    ("middle,0", 4, [0, 2]),
    ("", 4, []),
    ("none", 4, []),
])
def test_parse_blocks(text, n, expect):
    assert parse_blocks(text, n) == expect


@pytest.mark.parametrize("text,msg", [
    ("30", r"block 30 does not exist; this model has 30 \(valid 0-29"),
    ("-31", "block -31 does not exist"),
    ("5-3", "runs backwards; write it as 3-5"),
    ("abc", r"cannot read 'abc'.*valid indices 0-29"),
    ("1-x", "cannot read '1-x'"),
    ("28-31", "block 31 does not exist"),
])
def test_parse_blocks_errors_name_the_fix(text, msg):
    with pytest.raises(ValueError, match=msg):
        parse_blocks(text, 30)


def test_parse_blocks_model_without_blocks():
    with pytest.raises(ValueError, match="no such blocks"):
        parse_blocks("middle", 0)


# -- schedule -----------------------------------------------------------------------------

def flow_percent_to_sigma(p):  # like ComfyUI's ModelSamplingDiscreteFlow with shift 1
    return 1.0 - p


def test_window_from_percents_uses_model_mapping():
    w = SigmaWindow.from_percents(0.0, 0.4, flow_percent_to_sigma)
    assert (w.sigma_start, w.sigma_end) == (math.inf, pytest.approx(0.6 + BOUNDARY_SLACK))
    calls = []
    SigmaWindow.from_percents(0.1, 0.3, lambda p: calls.append(p) or 5.0)
    # the two bounds, then the sigma just past the start (to tell a run that starts inside the window)
    assert calls == [pytest.approx(0.1 - BOUNDARY_SLACK), pytest.approx(0.3 - BOUNDARY_SLACK),
                     pytest.approx(0.1 + BOUNDARY_SLACK)]


def test_window_contains_start_inclusive_end_exclusive():
    w = SigmaWindow.from_percents(0.2, 0.5, flow_percent_to_sigma)
    assert w.contains(0.8) and w.contains(0.6) and w.contains(0.5016)
    assert not w.contains(0.5) and not w.contains(0.81) and not w.contains(0.1)
    # a step up to 1.5 table entries (0.0015 of denoising) early counts as on the boundary:
    # the end stays exclusive, the start inclusive
    assert not w.contains(0.5014) and w.contains(0.8014) and not w.contains(0.8016)


def test_open_ends():
    w = SigmaWindow.from_percents(0.0, 1.0, flow_percent_to_sigma)
    assert w.contains(1e6) and w.contains(0.0) and w.bounds() == ALWAYS


def test_adjacent_windows_never_both_contain_a_sigma():
    a = SigmaWindow.from_percents(0.0, 0.4, flow_percent_to_sigma)
    b = SigmaWindow.from_percents(0.4, 1.0, flow_percent_to_sigma)
    for s in np.linspace(0, 1, 1001):
        assert a.contains(float(s)) + b.contains(float(s)) == 1
    # float32 neighbours of the shared boundary, on the host and as the kernels' float32 bounds
    x = torch.tensor(a.sigma_end, dtype=torch.float32)
    probes = [float(x)]
    for d in (math.inf, -math.inf):
        y = x.clone()
        for _ in range(12):
            y = torch.nextafter(y, torch.tensor(d))
            probes.append(float(y))
    s32 = torch.tensor(probes, dtype=torch.float32)
    for w in (a, b):
        lo, hi = w.bounds()
        assert ((s32 > lo) & (s32 <= hi)).tolist() == [w.contains(s) for s in probes]
    for s in probes:
        assert a.contains(s) + b.contains(s) == 1, s


def comfy_flow_table(shift):
    """ModelSamplingDiscreteFlow.sigmas as ComfyUI computes them: float32 ops on a 1000-step grid."""
    t = (torch.arange(1, 1001, 1) / 1000) * 1000 / 1000
    return t if shift == 1.0 else shift * t / (1 + (shift - 1) * t)


def comfy_simple(table, steps):  # ComfyUI's simple_scheduler
    ss = len(table) / steps
    return [float(table[-(1 + int(x * ss))]) for x in range(steps)] + [0.0]


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0, 8.0, 12.5])
def test_simple_scheduler_steers_exactly_p_times_n_steps(shift):
    """The float32 sigma table puts the boundary step a few ulps off the double-precision
    percent_to_sigma; it must still count as on the boundary (the issue's 21 of 50 at 0.4)."""
    table = comfy_flow_table(shift)
    to_sigma = lambda p: 1.0 if p <= 0 else 0.0 if p >= 1 else shift * (1 - p) / (1 + (shift - 1) * (1 - p))  # noqa: E731
    checked = 0
    for n in range(1, 501, 3):
        sig = comfy_simple(table, n)
        for p in (k / 100 for k in range(1, 100)):
            if abs(p * n - round(p * n)) > 1e-9:
                continue
            a = SigmaWindow.from_percents(0.0, p, to_sigma)
            b = SigmaWindow.from_percents(p, 1.0, to_sigma)
            assert a.steps_in(sig) == round(p * n), (n, p)
            assert b.steps_in(sig) == n - round(p * n), (n, p)
            checked += 1
    assert checked > 300


@pytest.mark.parametrize("start,end,msg", [
    (0.5, 0.5, "must be below end_percent"),
    (0.6, 0.2, "must be below end_percent"),
    (-0.1, 0.4, "lie in 0..1"),
    (0.0, 1.2, "lie in 0..1"),
])
def test_window_errors(start, end, msg):
    with pytest.raises(ValueError, match=msg):
        SigmaWindow.from_percents(start, end, flow_percent_to_sigma)


# -- profile ------------------------------------------------------------------------------

def test_profile_round_trip(tmp_path):
    p = MAProfile("Wan", 1536, 30, {15: (12, 407), 3: (12,)}, {15: (812.5, 301.25)})
    path = str(tmp_path / "wan.safetensors")
    p.save(path)
    q = MAProfile.load(path)
    assert q == p
    assert q.channels[15] == (12, 407) and isinstance(q.channels[15][0], int)


def test_profile_check_model():
    p = MAProfile("Wan", 1536, 30, {15: (12,)})
    p.check_model("Wan", 1536, 30)
    for other in [("HunyuanVideo", 1536, 30), ("Wan", 5120, 30), ("Wan", 1536, 40)]:
        with pytest.raises(ValueError, match="Record a profile of this model.*or disconnect"):
            p.check_model(*other)


def test_profile_channels_for_falls_back_to_nearest_block():
    p = MAProfile("Wan", 128, 30, {4: (1,), 10: (2,), 20: (3,)})
    assert p.channels_for(10) == (2,)
    assert p.channels_for(0) == (1,)
    assert p.channels_for(7) == (1,)       # tie 4 vs 10: the lower block
    assert p.channels_for(16) == (3,)
    assert p.channels_for(29) == (3,)
    assert MAProfile("Wan", 128, 30, {}).channels_for(3) is None


def test_load_rejects_other_safetensors(tmp_path):
    from safetensors.torch import save_file
    path = str(tmp_path / "lora.safetensors")
    save_file({"w": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a comfyui-stas MA profile"):
        MAProfile.load(path)


# -- plot ---------------------------------------------------------------------------------

def cell_colour(img, grid, t, y, x, cell, gap=2, max_cols=8):
    _, h, w = grid
    r, c = divmod(t, min(grid[0], max_cols))
    return img[r * (h * cell + gap) + y * cell + cell // 2, c * (w * cell + gap) + x * cell + cell // 2]


def test_mask_preview_shape_and_colours():
    grid = (3, 4, 5)
    img = mask_preview(grid, BoundarySpec())
    cell = 16  # 256 // max(h, w), at most 16
    assert img.dtype == np.float32 and img.shape == (4 * cell, 3 * 5 * cell + 2 * 2, 3)
    assert img.min() >= 0 and img.max() <= 1
    np.testing.assert_allclose(cell_colour(img, grid, 0, 2, 2, cell), CLASS_COLOURS[TokenClass.FIRST_FRAME], rtol=1e-6)
    np.testing.assert_allclose(cell_colour(img, grid, 1, 0, 3, cell), CLASS_COLOURS[TokenClass.HEAD], rtol=1e-6)
    np.testing.assert_allclose(cell_colour(img, grid, 2, 3, 0, cell), CLASS_COLOURS[TokenClass.TAIL], rtol=1e-6)
    # interior is never steered: drawn dark
    np.testing.assert_allclose(cell_colour(img, grid, 2, 1, 1, cell), CLASS_COLOURS[TokenClass.INTERIOR] * 0.3, rtol=1e-6)


def test_mask_preview_darkens_what_the_spec_leaves_alone():
    grid = (2, 3, 3)
    img = mask_preview(grid, BoundarySpec(first_frame=False, head=1, tail=0), cell=4)
    np.testing.assert_allclose(cell_colour(img, grid, 0, 1, 1, 4), CLASS_COLOURS[TokenClass.FIRST_FRAME] * 0.3, rtol=1e-6)
    np.testing.assert_allclose(cell_colour(img, grid, 1, 0, 1, 4), CLASS_COLOURS[TokenClass.HEAD], rtol=1e-6)
    np.testing.assert_allclose(cell_colour(img, grid, 1, 2, 1, 4), CLASS_COLOURS[TokenClass.TAIL] * 0.3, rtol=1e-6)


def test_mask_preview_wraps_rows_of_tiles():
    img = mask_preview((10, 2, 2), BoundarySpec(), cell=4, gap=2, max_cols=4)
    assert img.shape == (3 * 8 + 2 * 2, 4 * 8 + 3 * 2, 3)
