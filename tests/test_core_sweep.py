"""stas_core.sweep: lists, the grid, the scores of synthetic videos whose answer is known, the guards, the pick."""
from __future__ import annotations

import math

import pytest
import torch

from stas_core import sweep as sw


def test_lists_parse_and_refuse_with_the_fix():
    assert sw.parse_floats("0.5, 1.0; 1.0", "alphas") == [0.5, 1.0]
    assert sw.parse_blocks_list("middle; 10-20;middle") == ["middle", "10-20"]
    assert sw.parse_windows("0-0.2, 0-0.4") == [(0.0, 0.2), (0.0, 0.4)]
    with pytest.raises(ValueError, match="alphas: 'x' is not a number"):
        sw.parse_floats("x", "alphas")
    with pytest.raises(ValueError, match="'0.4-0.2' is not a window"):
        sw.parse_windows("0.4-0.2")
    with pytest.raises(ValueError, match="the list is empty"):
        sw.parse_blocks_list(" ; ")
    g = sw.grid([0.5, 1.0], ["middle"], [(0.0, 0.2), (0.0, 0.4)])
    assert [v.label() for v in g][:2] == ["alpha 0.5, blocks middle, window 0-0.2", "alpha 0.5, blocks middle, window 0-0.4"]
    with pytest.raises(ValueError, match="make 18 variants, more than 16"):
        sw.grid([0.1, 0.2, 0.3], ["a", "b", "c"], [(0.0, 0.1), (0.0, 0.2)])


def video(frames=17, size=32, seam_jump=0.0, blur=False, frozen=False, seed=0):
    """Frames drifting smoothly (a moving gradient plus texture), with an added jump at every 4-frame chunk seam."""
    g = torch.Generator().manual_seed(seed)
    tex = torch.rand(size, size, 3, generator=g)
    out = []
    for t in range(frames):
        shift = 0 if frozen else t
        f = torch.roll(tex, shifts=shift, dims=1)
        chunk = 0 if t == 0 else (t - 1) // 4 + 1
        f = (f * 0.8 + 0.1 + seam_jump * (chunk % 2)).clamp(0, 1)
        out.append(f)
    v = torch.stack(out)
    if blur:
        v = torch.nn.functional.avg_pool2d(v.permute(0, 3, 1, 2), 5, 1, 2, count_include_pad=False).permute(0, 2, 3, 1)
    return v


def test_scores_see_seams_freezing_and_blur():
    base = sw.measure(video(seam_jump=0.1), 4)
    smooth = sw.measure(video(), 4)
    assert smooth.seam_ratio < base.seam_ratio and smooth.flicker < base.flicker
    assert sw.score(smooth, base) < 1.0 == sw.score(base, base)
    assert sw.disqualified(smooth, base, 0.1) is None
    frozen = sw.measure(video(frozen=True), 4)
    assert "froze" in sw.disqualified(frozen, base, 0.1)
    blurred = sw.measure(video(blur=True), 4)
    assert "blurred" in sw.disqualified(blurred, base, 0.1)


def test_pick_least_score_qualified_ties_to_the_smaller_change_and_none_unless_below_one():
    base = sw.Scores(2.0, 0.1, 0.2, 0.05)
    better = sw.Scores(1.0, 0.1, 0.2, 0.05)      # score 0.75
    v = lambda a, b="middle", s=0.0, e=0.4: sw.Variant(a, b, s, e)  # noqa: E731
    rs = [sw.Result(v(1.0), 8, 1, better), sw.Result(v(0.5), 8, 1, better), sw.Result(v(0.5), 4, 1, better),
          sw.Result(v(0.2), 0, 1, sw.Scores(0.5, 0.01, 0.2, 0.05), flag="steers no step of 10"),
          sw.Result(v(0.1), 8, 1, sw.Scores(0.5, 0.01, 0.01, 0.05))]
    assert sw.judge(rs, base, 0.1) == 2   # equal scores: fewest steered steps, then blocks, then alpha
    assert math.isclose(rs[0].score, 0.75) and rs[3].flag == "steers no step of 10" and "froze" in rs[4].flag
    table = sw.table(base, rs, 2, 0.1)
    assert table.splitlines()[4].startswith("* ") and "steers no step of 10" in table
    worse = [sw.Result(v(1.0), 8, 1, sw.Scores(2.0, 0.1, 0.2, 0.05))]   # score 1.0: no better than the baseline
    assert sw.judge(worse, base, 0.1) is None
    assert "No variant scored below the unpatched baseline" in sw.table(base, worse, None, 0.1)
