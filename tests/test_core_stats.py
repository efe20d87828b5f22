"""Unit tests of the MA recording, statistics and figures (stas_core.record / stats / plot).

A synthetic hidden state with planted massive activations (known channels; first frame >
boundary rows > interior) goes through the same core functions the recorder calls on the
device (channel_stats, local_tokens, pack_flat / unpack_flat, write_block); the summary must recover the
planted channels, their peak-to-mean ratios (as channels.ma_ratio defines them) and the
group magnitudes; the figures must have their documented layout; the export must round-trip.
"""
from __future__ import annotations

import builtins
import json

import numpy as np
import pytest
import torch

from stas_core import plot, stats
from stas_core.channels import ma_ratio
from stas_core.layout import BoundarySpec, TokenClass, token_classes
from stas_core.profile import MAProfile
from stas_core.record import (Recording, RunLayout, RunRecording, auto_stride, channel_stats, fingerprint,
                              fingerprint_matches, kept_rows_cols, pack_flat, parse_steps, unpack_flat)

GRID = (5, 8, 8)
D = 128
CHANS = (17, 99)
LEVELS = {"first_frame": 1000.0, "boundary": 400.0, "interior": 100.0}


def planted(batch=1, grid=GRID, d=D, seed=0, scale=1.0):
    """h [B, N, D]: noise ~N(0, 0.5) plus planted MAs in CHANS (sign + for 17, - for 99)."""
    g = torch.Generator().manual_seed(seed)
    t, hh, ww = grid
    h = torch.randn(batch, t * hh * ww, d, generator=g) * 0.5
    cls = token_classes(grid)
    lv = torch.full((cls.numel(),), LEVELS["boundary"])
    lv[cls == TokenClass.FIRST_FRAME] = LEVELS["first_frame"]
    lv[cls == TokenClass.INTERIOR] = LEVELS["interior"]
    for i, c in enumerate(CHANS):
        h[:, :, c] = lv * scale * (1 if i == 0 else -1)
    return h


def layout(grid=GRID, stride=1, steps=(0, 1, 2), blocks=(2,), prompts=(0,), batch=1, top_k=4, sigmas=None):
    rows, cols = kept_rows_cols(grid[1], grid[2], stride)
    sig = sigmas or tuple(np.linspace(1.0, 0.0, len(steps) + 1).tolist())
    return RunLayout("Wan", "WAN21_T2V", D, 4, (batch, 16, grid[0], grid[1] * 2, grid[2] * 2), grid, sig,
                     tuple(steps), tuple(blocks), tuple(prompts), batch, stride, rows, cols, top_k)


def record(run, h, block=2, step=0, prompt=0, frames=None, channels=None, view="unsteered"):
    """What RecCall.record_block + flush do, on the CPU."""
    lay = run.layout
    frames = list(range(lay.grid[0])) if frames is None else frames
    js = run.claim(block, step, prompt, frames)
    if not js:
        return
    chans = torch.tensor(channels or (17, 99, 5, 6))
    tok = run.local_tokens(js, lay.grid, h.device)
    vals = h.index_select(1, tok).index_select(2, chans)
    peak, asum = channel_stats(h)
    chans, vals, peak, asum = unpack_flat(pack_flat([chans, vals, peak, asum]).cpu(), [chans, vals, peak, asum])
    run.write_block(block, step, prompt, [frames[j] for j in js], chans, vals, peak, asum, h.shape[1], view)


@pytest.fixture
def run():
    r = RunRecording(layout(), 1 << 30)
    for s in range(3):
        record(r, planted(seed=s, scale=1.0 - 0.2 * s), step=s)
    return r


# -- parsing and sizing ------------------------------------------------------------------

def test_parse_steps():
    assert parse_steps("all", 4) == [0, 1, 2, 3]
    assert parse_steps("0-2, 3", 8) == [0, 1, 2, 3]
    assert parse_steps("-1", 8) == [7]
    assert parse_steps("0-19", 8) == list(range(8))
    assert parse_steps("10-20", 8) == []
    with pytest.raises(ValueError, match="cannot read"):
        parse_steps("first", 8)
    with pytest.raises(ValueError, match="backwards"):
        parse_steps("5-3", 8)


def test_kept_tokens_keep_boundary_rows_and_fit_auto_budget():
    rows, cols = kept_rows_cols(45, 80, 2)
    assert rows[0] == 0 and rows[-1] == 44 and cols[-1] == 79
    assert auto_stride((5, 8, 8)) == 1
    grid = (21, 45, 80)  # Wan 14B 720p, 81 frames: 75600 tokens
    s = auto_stride(grid)
    r, c = kept_rows_cols(45, 80, s)
    assert s > 1 and 21 * len(r) * len(c) <= 32768
    assert layout(grid, stride=s).estimate_bytes() < 256 << 20


def test_step_of_maps_sigmas_and_intermediate_evaluations():
    lay = layout(sigmas=(1.0, 0.5, 0.25, 0.0), steps=(0, 1, 2))
    assert lay.step_of(1.0) == 0 and lay.step_of(0.5) == 1 and lay.step_of(0.25) == 2
    assert lay.step_of(0.7) == 0          # a midpoint evaluation of step 0 (dpm2, heun-like)
    assert lay.step_of(0.5 * (1 + 5e-6)) == 1
    assert lay.step_of(2.0) is None


# -- statistics of a planted run ------------------------------------------------------------

def test_summary_recovers_planted_channels_ratios_and_groups(run):
    d = stats.summarize(run, step=0, threshold=50.0)
    found = d["detected"]["2"]["channels"]
    assert [c for c, _ in found] and sorted(c for c, _ in found) == sorted(CHANS)
    expect = float(ma_ratio(planted(seed=0)).max())  # step 0 has the strongest MAs
    for c, r in found:
        assert r == pytest.approx(expect, rel=1e-4)
    m = d["group_means"]
    assert m["first_frame"] == pytest.approx(1000.0) and m["boundary"] == pytest.approx(400.0)
    assert m["interior"] == pytest.approx(100.0)
    assert d["ratios"]["first_frame/interior"] == pytest.approx(10.0)
    assert d["ratios"]["boundary/interior"] == pytest.approx(4.0)
    assert d["ratios"]["first_frame/boundary"] == pytest.approx(2.5)
    text = stats.summary_text(d)
    assert "ch 17" in text and "ch 99" in text and "first/interior 10.00x" in text and "boundary/interior 4.00x" in text
    assert "Recorded blocks [2], steps [0, 1, 2], prompts ['cond'];" in text and ", cond, sample 0," in text


def test_one_channel_and_mask_widths(run):
    e = run.entries[(2, 0, 0)]
    v = stats.token_magnitude(e, 0, 99)
    assert v.shape == (5, 64) and np.allclose(v[0], 1000.0)
    with pytest.raises(ValueError, match="not tracked"):
        stats.token_magnitude(e, 0, 3)
    # two-row boundaries: the second rows are interior (100) so the boundary mean drops
    d = stats.summarize(run, step=0, spec=BoundarySpec(True, True, 2, 2, "rows"))
    assert d["group_means"]["boundary"] == pytest.approx(250.0)


def test_hierarchy_matrix_over_steps(run):
    mat, blocks, steps = stats.hierarchy_matrix(run, 0)
    assert blocks == [2] and steps == [0, 1, 2] and mat.shape == (3, 1, 3)
    assert np.allclose(mat[:, 0, 0], [1000, 400, 100])
    assert np.allclose(mat[:, 0, 2], [600, 240, 60])


def test_pick_errors_list_what_was_recorded(run):
    with pytest.raises(ValueError, match=r"recorded blocks: \[2\]"):
        stats.pick(run, block=3)
    with pytest.raises(ValueError, match=r"recorded steps: \[0, 1, 2\]"):
        stats.pick(run, step=7)
    with pytest.raises(ValueError, match=r"^prompt 'uncond' was not recorded \(recorded: \['cond'\]\)"):
        stats.pick(run, prompt=1)
    with pytest.raises(ValueError, match="batch has 1"):
        stats.pick(run, sample=1)
    with pytest.raises(ValueError, match="recorded nothing"):
        stats.pick(RunRecording(layout(), 1 << 20))


def test_pick_negative_counts_from_the_end_like_python(run):
    """-1 means the last recorded block / step, as on the MA Recorder's steps."""
    assert stats.pick(run, block=-1, step=-1)[:2] == (2, 2)
    assert stats.pick(run, block=-1, step=-3)[:2] == (2, 0)
    assert stats.pick(run, block=2, step=0)[:2] == (2, 0)
    with pytest.raises(ValueError, match=r"step -4 was not recorded .*recorded steps: \[0, 1, 2\]"):
        stats.pick(run, step=-4)


def test_profile_from_run(run):
    prof = stats.profile_from_run(run, 50.0, 4)
    assert prof.channels == {2: CHANS} and prof.family == "Wan" and prof.hidden_size == D and prof.n_blocks == 4
    assert prof.reference[2] == pytest.approx((1000.0, 1000.0))
    with pytest.raises(ValueError, match="no massive-activation channel reaches 100000x"):
        stats.profile_from_run(run, 100000.0, 4)


def test_context_window_frames_first_write_wins_and_nan_elsewhere():
    r = RunRecording(layout(steps=(0,)), 1 << 30)
    h = planted()
    win = h[:, : 3 * 64]  # a call on frames 0-2 (its own first frame is global frame 0)
    record(r, win, frames=[0, 1, 2])
    e = r.entries[(2, 0, 0)]
    assert e.filled.tolist() == [True, True, True, False, False]
    assert torch.isnan(e.mag[0, 3:]).all() and not torch.isnan(e.mag[0, :3]).any()
    # the next window overlaps frame 2: only frames 3-4 are new
    assert r.claim(2, 0, 0, [2, 3, 4]) == [1, 2]
    assert r.claim(2, 0, 0, [2, 3, 4]) == []


def test_budget_is_enforced_and_noted():
    lay = layout()
    r = RunRecording(lay, lay.entry_bytes() + 10)
    record(r, planted(), step=0)
    record(r, planted(), step=1)
    assert list(r.entries) == [(2, 0, 0)]
    assert any("max_memory_mb" in k for k in r.notes)


def test_steering_arrays():
    r = RunRecording(layout(steps=(0,)), 1 << 30)
    h = planted()
    record(r, h)
    p = r.layout.n_positions
    chans = torch.tensor(CHANS)
    before = h[:, :, list(CHANS)]
    after = before.clone()
    mask = torch.zeros(5 * p, dtype=torch.bool)
    mask[:64] = True
    after[:, :64] = 2000.0
    r.write_steer(2, 0, 0, list(range(5)), chans, before, after, mask)
    tok, b, a, ch = stats.steering_arrays(r, r.entries[(2, 0, 0)])
    # fp16 / bf16 models hand over values in their own dtype (the full-size GPU run found this)
    for dt in (torch.float16, torch.bfloat16):
        r2 = RunRecording(layout(steps=(0,)), 1 << 30)
        record(r2, h.to(dt))
        r2.write_steer(2, 0, 0, list(range(5)), chans, before.to(dt), after.to(dt), mask)
        e = r2.entries[(2, 0, 0)]
        assert e.mag.dtype == e.steer_after.dtype == torch.float32 and torch.allclose(e.steer_after, r.entries[(2, 0, 0)].steer_after)
    assert list(ch) == list(CHANS) and tok.tolist() == list(range(64))
    assert np.allclose(np.abs(b), 1000.0) and np.allclose(a, 2000.0)
    d = stats.summarize(r)
    assert d["steering"]["tokens"] == 64 and d["steering"]["mean_abs_after"] == pytest.approx(2000.0)


# -- device helpers ----------------------------------------------------------------------

def test_channel_stats_and_flush():
    h = planted(batch=2)
    peak, asum = channel_stats(h)
    assert torch.allclose(peak, h.abs().amax(1)) and torch.allclose(asum, h.abs().sum(1), rtol=1e-5)
    ts = [torch.tensor([3, 5]), torch.tensor([True, False]), torch.randn(2, 3)]
    out = unpack_flat(pack_flat(ts).cpu(), ts)
    assert [o.dtype for o in out] == [t.dtype for t in ts]
    assert all(torch.equal(a, b) for a, b in zip(out, ts))


def test_fingerprint_and_recording_runs():
    x = torch.randn(1, 16, 5, 16, 16)
    fp = fingerprint(x)
    assert fingerprint_matches(fp, x.clone())
    assert fingerprint_matches(fp, x.half().float())         # fp16 intermediates
    assert not fingerprint_matches(fp, x + 1e-2)
    assert not fingerprint_matches(fp, torch.randn(1, 16, 5, 16, 16))
    assert not fingerprint_matches(fp, x[:, :, :4])
    rec = Recording("test", budget_bytes=1 << 30, keep=2)
    with pytest.raises(ValueError, match="recording is empty"):
        rec.run_for(x)
    runs = []
    for i in range(3):
        r = RunRecording(layout(), 1 << 20)
        xi = torch.randn(1, 16, 5, 16, 16, generator=torch.Generator().manual_seed(i))
        r.fingerprint = fingerprint(xi)
        rec.make_room(0)
        rec.add(r)
        runs.append((r, xi))
    assert len(rec.runs) == 2                                # keep=2: the oldest run was dropped
    assert rec.run_for(runs[2][1]) is runs[2][0] and rec.run_for(runs[1][1]) is runs[1][0]
    with pytest.raises(ValueError, match="from another run"):
        rec.run_for(runs[0][1])


# -- figures ---------------------------------------------------------------------------------

def _colour_count(img, colour, tol=0.02):
    return int((np.abs(img - np.asarray(colour)).max(-1) < tol).sum())


def test_profile_image_layout(run):
    lay = run.layout
    v = stats.token_magnitude(run.entries[(2, 0, 0)])
    img = plot.token_profile_image(v, stats.kept_classes(run), lay.positions().numpy(), lay.grid, "t")
    assert img.shape == (400, 1024, 3) and img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
    left, right, top, bottom = 70, 16, 30, 44
    pw, ph = 1024 - left - right, 400 - top - bottom
    # every class drawn in its colour
    for c in (TokenClass.FIRST_FRAME, TokenClass.HEAD, TokenClass.TAIL, TokenClass.INTERIOR):
        assert _colour_count(img[top:top + ph, left:left + pw], plot.CLASS_COLOURS[c]) > 10
    # frame boundary lines at x = left + f * pw / T
    for f in range(1, 5):
        x = left + int(round(f * pw / 5))
        col = img[top + 5: top + ph - 5, x]
        assert (np.abs(col - plot.FRAME_C).max(-1) < 0.02).mean() > 0.5
    # first-frame dots (1000) sit above the interior dots (100): red rows above grey rows
    area = img[top:top + ph]
    red_rows = np.where((np.abs(area[:, left:left + pw // 5] - plot.CLASS_COLOURS[3]).max(-1) < 0.02).any(1))[0]
    grey_rows = np.where((np.abs(area[:, left + pw // 5:left + pw] - plot.CLASS_COLOURS[0]).max(-1) < 0.02).any(1))[0]
    assert red_rows.max() < grey_rows.min()


def test_heatmaps_hierarchy_steering_layouts(run):
    lay = run.layout
    v = stats.token_magnitude(run.entries[(2, 0, 0)]).reshape(5, 8, 8)
    img = plot.frame_heatmaps_image(v, "h")
    cell = 160 // 8
    top, head, left, gap = 30, 16, 10, 10
    y0 = top + head
    tile0 = img[y0:y0 + 8 * cell, left:left + 8 * cell]
    tile1 = img[y0:y0 + 8 * cell, left + 8 * cell + gap:left + 16 * cell + gap]
    # frame 0 uniform and brightest; frame 1: boundary rows brighter than interior rows
    assert np.allclose(tile0, tile0[0, 0]) and tile0.mean() > tile1.mean()
    assert tile1[cell // 2].mean() > tile1[4 * cell].mean()
    assert np.allclose(tile1[cell // 2], tile1[-cell // 2])
    mat, blocks, steps = stats.hierarchy_matrix(run, 0)
    hi = plot.hierarchy_image(mat, blocks, steps, "x")
    cw, ch = 28, 28
    cells = [hi[48 + ch // 2, 64 + g * (3 * cw + 24) + cw // 2] for g in range(3)]
    lum = [float(c.mean()) for c in cells]
    assert lum[0] > lum[1] > lum[2]  # first frame > boundary > interior (same colour scale)
    s0 = plot.steering_image(None, None, None, [], lay.grid, "s", message="none")
    assert s0.shape == (120, 1024, 3)
    tok = np.arange(64)
    s2 = plot.steering_image(tok, np.full((64, 2), 400.0), np.full((64, 2), 1000.0), [17, 99], lay.grid, "s")
    assert s2.shape == (44 + 2 * 160 + 22 + 44, 1024, 3)
    assert _colour_count(s2, plot.AFTER_C) > 0 and _colour_count(s2, plot.BEFORE_C) > 0


def test_figures_without_pillow(run, monkeypatch):
    """numpy-only path: same sizes and marks, no text."""
    real_import = builtins.__import__

    def no_pil(name, *a, **k):
        if name == "PIL" or name.startswith("PIL."):
            raise ImportError("no Pillow here")
        return real_import(name, *a, **k)

    lay = run.layout
    v = stats.token_magnitude(run.entries[(2, 0, 0)])
    with_text = plot.token_profile_image(v, stats.kept_classes(run), lay.positions().numpy(), lay.grid, "title")
    monkeypatch.setattr(builtins, "__import__", no_pil)
    assert not plot.pillow_available()
    bare = plot.token_profile_image(v, stats.kept_classes(run), lay.positions().numpy(), lay.grid, "title")
    assert bare.shape == with_text.shape
    assert _colour_count(bare, plot.CLASS_COLOURS[3]) == _colour_count(with_text, plot.CLASS_COLOURS[3])
    mat, blocks, steps = stats.hierarchy_matrix(run, 0)
    assert plot.hierarchy_image(mat, blocks, steps).ndim == 3


def test_colormap_and_scale():
    c = plot.colormap(np.array([0.0, 1.0, np.nan]))
    assert c.shape == (3, 3) and c[1].mean() > c[0].mean() and np.allclose(c[2], plot.NAN_C)
    s = plot.Scale(np.array([1.0, 10.0, 1000.0]), log=True)
    y = s(np.array([1.0, 1000.0]))
    assert 0 < y[0] < y[1] < 1
    assert all(t > 0 for t in s.ticks())
    lin = plot.Scale(np.array([0.0, 1000.0]))
    assert lin.ticks()[0] == 0 and all(t == round(t) for t in lin.ticks())


# -- export ----------------------------------------------------------------------------------

def test_export_round_trip(run, tmp_path):
    run.fingerprint = fingerprint(torch.randn(1, 16, 5, 16, 16))
    r = RunRecording(layout(steps=(0,)), 1 << 30)
    h = planted()
    record(r, h)
    mask = torch.zeros(5 * 64, dtype=torch.bool)
    mask[:64] = True
    r.write_steer(2, 0, 0, list(range(5)), torch.tensor(CHANS), h[:, :, list(CHANS)], h[:, :, list(CHANS)] * 2, mask)
    r.fingerprint = run.fingerprint
    r.note("a note")
    for src in (run, r):
        d = stats.summarize(src)
        st, js = stats.export_run(src, str(tmp_path / f"rec{len(src.entries)}"), d)
        back = RunRecording.load(st)
        assert back.layout == src.layout and back.notes == src.notes
        assert set(back.entries) == set(src.entries)
        for k, e in src.entries.items():
            b = back.entries[k]
            assert torch.equal(b.mag.nan_to_num(-7), e.mag.nan_to_num(-7)) and torch.equal(b.peak, e.peak)
            assert torch.equal(b.abs_sum, e.abs_sum) and b.count == e.count and b.view == e.view
            assert b.has_steer == e.has_steer
            if e.has_steer:
                assert torch.equal(b.steer_mask, e.steer_mask) and torch.equal(b.steer_channels, e.steer_channels)
                assert torch.equal(b.steer_after.nan_to_num(-7), e.steer_after.nan_to_num(-7))
        assert back.fingerprint[0] == src.fingerprint[0] and torch.equal(back.fingerprint[1], src.fingerprint[1])
        assert stats.summary_text(stats.summarize(back)) == stats.summary_text(d)
        doc = json.loads(open(js).read())  # strict JSON (no NaN)
        assert doc["summary"]["detected"]["2"]["channels"][0][0] in CHANS
        assert doc["layout"]["grid"] == list(GRID) and doc["layout"]["prompts"] == [0]
        assert doc["summary"]["recorded_prompts"] == ["cond"] and doc["summary"]["shown"]["prompt"] == "cond"
    with pytest.raises(ValueError, match="not a comfyui-stas MA recording"):
        prof = MAProfile("Wan", D, 4, {2: CHANS})
        prof.save(str(tmp_path / "p.safetensors"))
        RunRecording.load(str(tmp_path / "p.safetensors"))


def test_recording_saved_with_the_old_chunks_key_loads(run, tmp_path):
    """Recordings exported before RunLayout's "chunks" became "prompts" still load."""
    from safetensors.torch import save_file

    run.fingerprint = fingerprint(torch.randn(1, 16, 5, 16, 16))
    tensors, meta = run.to_tensors()
    old = json.loads(meta["layout"])
    old["chunks"] = old.pop("prompts")
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={**meta, "layout": json.dumps(old)})
    back = RunRecording.load(str(tmp_path / "old.safetensors"))
    assert back.layout == run.layout and back.layout.prompts == (0,)
    assert RunLayout.from_json(old) == run.layout
    assert stats.summary_text(stats.summarize(back)) == stats.summary_text(stats.summarize(run))


def test_profile_save_load_info(tmp_path):
    p = MAProfile("Wan", D, 4, {2: CHANS}, {2: (1000.0, 900.0)}, {"model": "WAN21_T2V"})
    p.save(str(tmp_path / "p.safetensors"))
    q = MAProfile.load(str(tmp_path / "p.safetensors"))
    assert q == p and q.info == {"model": "WAN21_T2V"}
    assert "block 2: channels [17, 99]" in q.describe()


def test_hierarchy_comparison_shares_one_colour_scale():
    """Alone, a uniform run of 10 and one of 1000 both fill their scale's top; compared, the
    weaker run is drawn darker than the stronger one (one scale for both)."""
    strong, weak = np.full((3, 1, 2), 1000.0), np.full((3, 1, 2), 10.0)
    cell = (48 + 14, 64 + 14)  # centre of the first cell of the first-frame panel (plot's layout)
    alone = [plot.hierarchy_image(m, [2], [0, 1])[cell] for m in (strong, weak)]
    assert np.allclose(alone[0], alone[1])
    both = plot.hierarchy_comparison_image([("with", strong, [2], [0, 1]), ("without", weak, [2], [0, 1])])
    h = plot.hierarchy_image(strong, [2], [0, 1]).shape[0]
    top, bottom = both[cell], both[h + cell[0], cell[1]]
    assert both.shape[0] == 2 * h and not np.allclose(top, bottom)
    assert top.sum() > bottom.sum() + 0.3, (top, bottom)
