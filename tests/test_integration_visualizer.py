"""MA Recorder, MA Visualizer and MA profiles in a real ComfyUI (tiny random-weight models).

Massive activations are planted by a test-only block patch (an "other node" already on the
block, which the recorder and STAS chain as their inner block): first latent frame 1000,
head/tail token rows of later frames 400, interior 100, in channels 17 (+) and 99 (-). Then:

* record -> visualize: the summary recovers the planted channels and ratios, the recorded
  values equal the block output bit for bit, the images and the chart data have the
  documented layout, the export round-trips, and recording never changes what is sampled;
* with STAS: values before and after steering, whichever side of STAS the recorder sits;
* CFG passes (batched and separate calls), batch > 1, context windows, HunyuanVideo and
  CogVideoX (object patches);
* profile save -> load -> STAS steers exactly as with the same channels given explicitly;
  a profile of another model is refused;
* bad input: clear ValueErrors at node execution or before step one, never a crash inside
  the sampler, and the user's MODEL is never left patched.
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
import types

import numpy as np
import pytest
import torch

from stas_harness import comfy_env as ce, models

pytestmark = pytest.mark.integration

CHANS = (17, 99)
T, HP, WP = 5, 8, 8   # token grid of the default latent


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """ComfyUI's output and models/stas_profiles folders redirected to a temp dir (the testbed stays untouched)."""
    import folder_paths
    out = tmp_path / "output"
    out.mkdir()
    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(out))
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "models"))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "stas_profiles",
                        ([str(tmp_path / "models" / "stas_profiles")], {".safetensors"}))
    return types.SimpleNamespace(out=out, profiles=tmp_path / "models" / "stas_profiles")


class _Shared:
    def __deepcopy__(self, memo):  # older ComfyUI deep-copies model_options on clone()
        return self


class Plant(_Shared):
    """patches_replace["dit"] patch that plants massive activations into the block output."""

    def __init__(self, layout, hw=(HP, WP), levels=(1000.0, 400.0, 100.0)):
        self.layout, self.hw, self.levels, self.calls = layout, hw, levels, 0

    def __call__(self, args, extra):
        self.calls += 1
        out = extra["original_block"](args)
        img = out["img"]
        h, w = self.hw
        t = img.shape[1] // (h * w)
        cls = self.layout.token_classes((t, h, w))
        lv = torch.full((cls.numel(),), self.levels[1])
        lv[cls == self.layout.TokenClass.FIRST_FRAME] = self.levels[0]
        lv[cls == self.layout.TokenClass.INTERIOR] = self.levels[2]
        for i, c in enumerate(CHANS):
            img[:, : t * h * w, c] = (lv * (1 if i == 0 else -1)).to(img.dtype)
        return out


class Capture(_Shared):
    """Outermost patch: keeps a copy of the block output of every call."""

    def __init__(self, inner):
        self.inner, self.outs = inner, []

    def __call__(self, args, extra):
        out = self.inner(args, extra)
        to = args["transformer_options"]
        self.outs.append((float(to["sigmas"].reshape(-1)[0]), list(to.get("cond_or_uncond") or []),
                          out["img"].detach().clone()))
        return out


latent = functools.partial(ce.latent, t=T, h=HP * 2, w=WP * 2)


def planted_model(pk, block=2, layers=4, **kw):
    base = models.tiny_wan(num_layers=layers)
    m = base.clone()
    plant = Plant(pk.layout, **kw)
    m.set_model_patch_replace(plant, "dit", "double_block", block)
    return m, plant


def recorder(pk, model, blocks="2", steps="all", record="cond", channels="auto", top_k=4, token_stride=0, mb=256):
    out = pk.rec.execute(model=model, blocks=blocks, steps=steps, record=record, channels=channels, top_k=top_k,
                         token_stride=token_stride, max_memory_mb=mb)
    return out.result[0], out.result[1]


def visualize(pk, rec, samples, block=-1, step=0, sample=0, prompt="cond", channel="max", threshold=50.0,
              log_scale=False, export=False, prefix="stas/test", mask=None):
    return pk.vis.execute(recording=rec, latent={"samples": samples}, block=block, step=step, sample=sample,
                          chunk=prompt, channel=channel, threshold=threshold, log_scale=log_scale, export=export,
                          filename_prefix=prefix, mask=mask)


# STAS Model Patch as ComfyUI calls it, at its declared defaults; on block 2, the first half of the steps.
stas = functools.partial(ce.stas, blocks="2", end_percent=0.5)


# -- record -> visualize -------------------------------------------------------------------

def test_record_visualize_summary_images_export(pk, dirs):
    model, plant = planted_model(pk)
    reference = ce.sample(model, latent(), steps=4)
    rm, rec = recorder(pk, model)
    cap = Capture(rm.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 2)])
    rm2 = rm.clone()
    rm2.set_model_patch_replace(cap, "dit", "double_block", 2)
    samples = ce.sample(rm2, latent(), steps=4)
    assert torch.equal(samples, reference), "recording changed the sampled latent"
    assert torch.equal(ce.sample(model, latent(), steps=4), reference), "the user's MODEL was left patched"

    run = rec.runs[-1]
    assert not run.notes
    assert sorted(run.entries) == [(2, s, 0) for s in range(4)]
    # recorded values are the block output, bit for bit, at the kept tokens and tracked channels
    pos = run.layout.positions()
    for s in range(4):
        e = run.entries[(2, s, 0)]
        sigma, cou, out = cap.outs[s]
        assert run.layout.step_of(sigma) == s and sorted(cou) == [0, 1]
        row = cou.index(0)
        vis = out[row]
        expect = vis[:, e.channels].reshape(T, HP * WP, -1)[:, pos].abs()
        assert torch.equal(e.mag[0], expect.float())
        assert torch.equal(e.peak[0], vis.abs().amax(0).float())
        assert set(CHANS) <= set(e.channels.tolist())

    res = visualize(pk, rec, samples, export=True)
    profile, heat, hier, steer, text = res.result
    assert "block 2: ch 17" in text and "ch 99" in text
    assert "first frame 1000 | boundary 400 | interior 100" in text
    assert "first/interior 10.00x | boundary/interior 4.00x | first/boundary 2.50x" in text
    assert "STAS steering: none recorded" in text
    assert profile.shape == (1, 400, 1024, 3) and steer.shape == (1, 120, 1024, 3)
    assert heat.shape[0] == 1 and heat.shape[-1] == 3 and hier.shape[0] == 1
    for img in (profile, heat, hier, steer):
        assert img.dtype == torch.float32 and 0 <= float(img.min()) and float(img.max()) <= 1
    chart = res.ui["stas_profile"][0]
    assert chart["grid"] == [T, HP, WP] and len(chart["values"]) == T * HP * WP == len(chart["classes"])
    assert chart["values"][0] == 1000.0 and chart["classes"][0] == 3 and chart["summary"] == text
    assert chart["prompt"] == "cond" and "prompts ['cond'];" in text
    # export: safetensors + JSON in the output folder, round trip
    files = sorted(os.listdir(dirs.out / "stas"))
    assert [f.rsplit(".", 1)[1] for f in files] == ["json", "safetensors"]
    back = pk.record.RunRecording.load(str(dirs.out / "stas" / files[1]))
    assert back.layout == run.layout and set(back.entries) == set(run.entries)
    assert all(torch.equal(back.entries[k].mag, run.entries[k].mag) for k in run.entries)
    assert f"Exported: {dirs.out / 'stas' / files[1]}" in text


def test_other_steps_blocks_channel_and_log(pk):
    model, _ = planted_model(pk)
    rm, rec = recorder(pk, model, blocks="1-3", steps="0,2", channels="17,99,5")
    samples = ce.sample(rm, latent(), steps=4)
    run = rec.runs[-1]
    assert sorted({(b, s) for b, s, _ in run.entries}) == [(b, s) for b in (1, 2, 3) for s in (0, 2)]
    assert run.entries[(1, 0, 0)].channels.tolist() == [5, 17, 99]
    res = visualize(pk, rec, samples, block=3, step=2, channel="99", log_scale=True)
    assert "block 3 step 2" in res.result[4] and "channel 99" in res.result[4]
    hier = res.result[2]
    assert hier.shape[1] > 48 + 2 * 3  # three block rows


def test_stas_values_before_and_after_steering(pk):
    model, _ = planted_model(pk)
    steered = stas(model, end_percent=0.5)
    only_stas = ce.sample(steered, latent(), steps=4)
    # recorder after STAS: it sees the steered stream; STAS reports before/after
    rm, rec = recorder(pk, steered)
    samples = ce.sample(rm, latent(), steps=4)
    assert torch.equal(samples, only_stas), "recording changed STAS's result"
    run = rec.runs[-1]
    tok = pk.layout.steer_token_indices((T, HP, WP), pk.layout.BoundarySpec())
    # README's window rule: the boundary is taken 0.0015 of denoising early, so the step that lands
    # on 0.5 (a float32 hair above its sigma) is not steered: 2 of 4 steps, as promised
    sigma_end = float(model.get_model_object("model_sampling").percent_to_sigma(0.5 - 0.0015))
    windowed = [s for s in range(4) if run.layout.sigmas[s] > sigma_end]
    assert len(windowed) == 2
    for s in range(4):
        e = run.entries[(2, s, 0)]
        in_window = s in windowed
        assert e.view == ("after steering" if in_window else "unsteered") and e.has_steer == in_window
        if not in_window:
            continue
        assert sorted(e.steer_channels.tolist()) == list(CHANS)
        mask = e.steer_mask.reshape(-1)
        p = run.layout.n_positions
        kept_tok = (torch.arange(T)[:, None] * HP * WP + run.layout.positions()[None]).reshape(-1)
        assert torch.equal(mask, torch.isin(kept_tok, tok))
        before = e.steer_before[0].reshape(T * p, -1)[mask].abs()
        after = e.steer_after[0].reshape(T * p, -1)[mask].abs()
        assert torch.allclose(after, torch.full_like(after, 1000.0))          # alpha * max|h|, sign kept
        first = mask[: p].sum()
        assert torch.allclose(before[:first], torch.full_like(before[:first], 1000.0))
        assert torch.allclose(before[first:], torch.full_like(before[first:], 400.0))
        # the recorder, outside STAS, sees boundary tokens at their steered value
        assert float(e.mag[0, 1, 0].max()) == pytest.approx(1000.0)
    res = visualize(pk, rec, samples)
    assert res.result[3].shape[1] > 120
    assert "STAS steering here: channels [17, 99]" in res.result[4] and "400 before -> 1000 after" not in res.result[4]
    # recorder before STAS: it sees the unsteered stream, and still gets before/after
    rm2, rec2 = recorder(pk, model)
    s2 = ce.sample(stas(rm2, end_percent=0.5), latent(), steps=4)
    assert torch.equal(s2, only_stas)
    e2 = rec2.runs[-1].entries[(2, 0, 0)]
    assert e2.view == "before steering" and e2.has_steer
    assert float(e2.mag[0, 1, 0].max()) == pytest.approx(400.0)


def test_cfg_prompts_and_batch(pk):
    model, _ = planted_model(pk)
    rm, rec = recorder(pk, model, record="both")
    samples = ce.sample(rm, latent(b=2), steps=2)
    run = rec.runs[-1]
    assert sorted(run.entries) == [(2, s, c) for s in range(2) for c in (0, 1)]
    for e in run.entries.values():
        assert e.mag.shape[:3] == (2, T, HP * WP) and not torch.isnan(e.mag).any()
    for prompt in ("cond", "uncond"):
        for sample in (0, 1):
            text = visualize(pk, rec, samples, prompt=prompt, sample=sample).result[4]
            assert f"{prompt}, sample {sample}" in text and "first/interior 10.00x" in text
    with pytest.raises(ValueError, match="sample 2 does not exist"):
        visualize(pk, rec, samples, sample=2)
    # cfg 1: ComfyUI skips the uncond pass, so only cond is recorded - and the visualizer says so
    rm1, rec1 = recorder(pk, model, record="both")
    s1 = ce.sample(rm1, latent(), steps=2, cfg=1.0)
    assert {c for _, _, c in rec1.runs[-1].entries} == {0}
    with pytest.raises(ValueError, match="prompt 'uncond' was not recorded"):
        visualize(pk, rec1, s1, prompt="uncond")


def _context_windows(model, length, overlap):
    import comfy.context_windows as cw
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode
    params = inspect.signature(ContextWindowsManualNode.execute).parameters
    kw = dict(model=model, context_length=length, context_overlap=overlap,
              context_schedule=cw.ContextSchedules.STATIC_STANDARD, context_stride=1, closed_loop=False,
              fuse_method=cw.ContextFuseMethods.PYRAMID, dim=2, freenoise=False)
    out = ContextWindowsManualNode.execute(**{k: v for k, v in kw.items() if k in params})
    return out.result[0] if hasattr(out, "result") else out[0]


def test_context_windows_fill_every_frame(pk):
    model, plant = planted_model(pk)
    windowed = _context_windows(model, length=4, overlap=1)
    rm, rec = recorder(pk, windowed, record="both")
    samples = ce.sample(rm, latent(t=9), steps=2)
    run = rec.runs[-1]
    assert run.layout.grid == (9, HP, WP) and not run.notes
    assert plant.calls > 2 * 2, "context windows did not split the calls"
    for e in run.entries.values():
        assert e.filled.all() and not torch.isnan(e.mag).any()
        # frame 0 was the first frame of the first window: 1000; later frames hold window-local levels
        assert float(e.mag[0, 0].amax()) == pytest.approx(1000.0)
    assert "first frame 1000" in visualize(pk, rec, samples).result[4]


def test_hunyuan_video_separate_prompt_calls(pk):
    base = models.tiny_hunyuan_video(depth=2, depth_single=2)
    g = torch.Generator().manual_seed(7)
    pooled = dict(pooled_output=torch.randn(1, 768, generator=g))
    ref = torch.randn(1, 16, 1, 8, 8, generator=g)
    pos = ce.text_cond(seed=1, tokens=8, ref_latent=ref, **pooled)  # ref tokens on cond only: no batching
    neg = ce.text_cond(seed=2, tokens=8, **pooled)
    rm, rec = recorder(pk, stas(base, blocks="all", channels="3,70", end_percent=1.0), blocks="all", record="both")
    lat = torch.zeros(1, 16, 3, 8, 8)
    samples = ce.sample(rm, lat, steps=2, cfg=2.0, positive=pos, negative=neg)
    run = rec.runs[-1]
    assert not run.notes and run.layout.grid == (3, 4, 4)
    assert sorted(run.entries) == [(b, s, c) for b in range(4) for s in range(2) for c in (0, 1)]
    for (b, s, c), e in run.entries.items():
        assert e.filled.all() and torch.isfinite(e.mag).all()
        assert e.has_steer == (c == 0) and e.view == ("after steering" if c == 0 else "unsteered")
    text = visualize(pk, rec, samples, block=3).result[4]
    assert "HunyuanVideo" in text and "STAS steering here: channels [3, 70]" in text


def test_cogvideox_object_patches(pk):
    try:
        import comfy.ldm.cogvideo.model  # noqa: F401
    except ImportError:
        pytest.skip(f"ComfyUI {ce.comfy_version()} has no native CogVideoX")
    base = models.tiny_cogvideox(num_layers=3)
    lat = torch.zeros(1, 16, 3, 8, 8)
    only = ce.sample(stas(base, blocks="1", channels="3,70", end_percent=1.0), lat, steps=2)
    rm, rec = recorder(pk, stas(base, blocks="1", channels="3,70", end_percent=1.0), blocks="0-2")
    samples = ce.sample(rm, lat, steps=2)
    assert torch.equal(samples, only)
    run = rec.runs[-1]
    assert not run.notes and sorted({b for b, _, _ in run.entries}) == [0, 1, 2]
    assert run.entries[(1, 0, 0)].has_steer and not run.entries[(0, 0, 0)].has_steer
    assert "CogVideoX" in visualize(pk, rec, samples, block=1).result[4]


# -- profiles --------------------------------------------------------------------------------

def test_profile_save_load_identical_steering(pk, dirs):
    model, _ = planted_model(pk)
    rm, rec = recorder(pk, model, steps="0-1")
    samples = ce.sample(rm, latent(), steps=4)
    prof, info = pk.save.execute(recording=rec, latent={"samples": samples}, filename="tiny_wan", threshold=50.0,
                                 top_k=4, overwrite=False).result
    path = dirs.profiles / "tiny_wan.safetensors"
    assert path.exists() and str(path) in info and "block 2: channels [17, 99]" in info
    assert prof.channels == {2: CHANS}
    with pytest.raises(ValueError, match="exists; choose another filename or turn on overwrite"):
        pk.save.execute(recording=rec, latent={"samples": samples}, filename="tiny_wan", threshold=50.0, top_k=4,
                        overwrite=False)
    pk.save.execute(recording=rec, latent={"samples": samples}, filename="tiny_wan", threshold=50.0, top_k=4,
                    overwrite=True)
    # Load MA Profile lists and loads it
    schema = pk.load.define_schema()
    assert "tiny_wan.safetensors" in schema.inputs[0].options
    loaded, text = pk.load.execute(profile_name="tiny_wan.safetensors").result
    assert loaded.channels == {2: CHANS} and loaded.family == "Wan" and "channels [17, 99]" in text
    with_profile = ce.sample(stas(model, profile=loaded), latent(), steps=4)
    explicit = ce.sample(stas(model, channels="17,99"), latent(), steps=4)
    auto = ce.sample(stas(model), latent(), steps=4)
    assert torch.equal(with_profile, explicit)
    assert not torch.equal(with_profile, ce.sample(model, latent(), steps=4)), "the profile steered nothing"
    assert auto.shape == explicit.shape
    with pytest.raises(ValueError, match="no massive-activation channel reaches"):
        pk.save.execute(recording=rec, latent={"samples": samples}, filename="x", threshold=1e5, top_k=4,
                        overwrite=False)
    with pytest.raises(ValueError, match="not a plain name"):
        pk.save.execute(recording=rec, latent={"samples": samples}, filename="../evil", threshold=50.0, top_k=4,
                        overwrite=False)
    with pytest.raises(ValueError, match="is not in"):
        pk.load.execute(profile_name="missing.safetensors")


def test_profile_of_another_model_is_refused(pk, dirs):
    model6, _ = planted_model(pk, layers=6)
    rm, rec = recorder(pk, model6, steps="0")
    samples = ce.sample(rm, latent(), steps=2)
    pk.save.execute(recording=rec, latent={"samples": samples}, filename="six_blocks", threshold=50.0, top_k=4,
                    overwrite=False)
    prof6 = pk.load.execute(profile_name="six_blocks.safetensors").result[0]
    model4, _ = planted_model(pk)
    with pytest.raises(ValueError, match="made for a Wan model with hidden size 128 and 6 blocks, but this is a "
                                         "Wan model with hidden size 128 and 4 blocks"):
        stas(model4, profile=prof6)
    P = pk.profile.MAProfile
    for name, prof in (("hidden", P("Wan", 256, 4, {2: CHANS})), ("family", P("HunyuanVideo", 128, 4, {2: CHANS}))):
        prof.save(str(dirs.profiles / f"{name}.safetensors"))
        loaded = pk.load.execute(profile_name=f"{name}.safetensors").result[0]
        with pytest.raises(ValueError, match="profile: made for a"):
            stas(model4, profile=loaded)
    (dirs.profiles / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read"):
        pk.load.execute(profile_name="junk.safetensors")


# -- bad input ---------------------------------------------------------------------------------

def test_bad_input_clear_errors(pk):
    model, plant = planted_model(pk)
    reference = ce.sample(model, latent(), steps=4)
    for blocks in ("none", "", " "):
        with pytest.raises(ValueError, match="MA Recorder: blocks .* selects no block, so nothing would be recorded"):
            recorder(pk, model, blocks=blocks)
    with pytest.raises(ValueError, match="block 9 does not exist"):
        recorder(pk, model, blocks="9")
    with pytest.raises(ValueError, match="MA Recorder: steps: cannot read 'first'"):
        recorder(pk, model, steps="first")
    with pytest.raises(ValueError, match="out of range"):
        recorder(pk, model, channels="500")

    # no steps in range: refused before step one (the block never ran), the MODEL is untouched
    rm, rec = recorder(pk, model, steps="10-20")
    calls = plant.calls
    with pytest.raises(ValueError, match=r"steps '10-20' selects no step of this 4-step run \(valid 0-3"):
        ce.sample(rm, latent(), steps=4)
    assert plant.calls == calls
    assert not rec.runs
    with pytest.raises(ValueError, match="recording is empty"):
        visualize(pk, rec, reference)

    # over the memory budget: refused before step one with the sizes to change
    rm, rec = recorder(pk, model, blocks="all", mb=1)
    with pytest.raises(ValueError, match="over max_memory_mb .* raise token_stride"):
        ce.sample(rm, latent(h=64, w=64), steps=20)
    assert plant.calls == calls

    # a recording from another run
    rm, rec = recorder(pk, model)
    samples = ce.sample(rm, latent(), steps=4)
    other = ce.sample(model, latent(), steps=4, seed=1)
    with pytest.raises(ValueError, match="this recording is from another run"):
        visualize(pk, rec, other)
    with pytest.raises(ValueError, match="from another run"):
        visualize(pk, rec, samples[:, :, :4])
    # a second run through the same recorder is told apart from the first
    samples2 = ce.sample(rm, latent(), steps=4, seed=3)
    assert len(rec.runs) == 2 and visualize(pk, rec, samples) and visualize(pk, rec, samples2)

    # visualizer inputs that name nothing recorded
    with pytest.raises(ValueError, match=r"block 1 was not recorded \(recorded blocks: \[2\]\)"):
        visualize(pk, rec, samples, block=1)
    with pytest.raises(ValueError, match=r"step 9 was not recorded for block 2 \(recorded steps: \[0, 1, 2, 3\]\)"):
        visualize(pk, rec, samples, step=9)
    with pytest.raises(ValueError, match="channel must be 'max' or a channel index"):
        visualize(pk, rec, samples, channel="big")
    with pytest.raises(ValueError, match="channel 3 was not tracked"):
        visualize(pk, rec, samples, channel="3")
    # image models are refused before step one
    assert torch.equal(ce.sample(model, latent(), steps=4), reference)


def test_recording_failure_never_stops_sampling(pk, monkeypatch, caplog):
    """A bug inside recording is logged and noted; sampling finishes; the visualizer says so."""
    model, _ = planted_model(pk)
    reference = ce.sample(model, latent(), steps=2)
    rm, rec = recorder(pk, model)

    calls = []

    def broken(*a, **k):
        calls.append(1)
        raise RuntimeError("simulated recorder bug")

    monkeypatch.setattr(pk.recpatch, "channel_stats", broken)
    with caplog.at_level(logging.ERROR, logger="comfyui-stas"):
        samples = ce.sample(rm, latent(), steps=2)
    assert torch.equal(samples, reference)
    assert any("simulated recorder bug" in k for k in rec.runs[-1].notes)
    # reported once, with its traceback; the run is not recorded further (no error per block and step)
    assert len(calls) == 1 and sum("recording failed" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(ValueError, match="recording of this run is incomplete"):
        visualize(pk, rec, samples)


def test_token_stride_subsamples_and_keeps_boundary_rows(pk):
    model, _ = planted_model(pk)
    rm, rec = recorder(pk, model, token_stride=3)
    samples = ce.sample(rm, latent(), steps=2)
    lay = rec.runs[-1].layout
    assert lay.rows == (0, 3, 6, 7) and lay.cols == (0, 3, 6, 7)
    text = visualize(pk, rec, samples).result[4]
    assert "80 of 320 tokens per call (stride 3)" in text
    assert "first/interior 10.00x | boundary/interior 4.00x" in text
    heat = visualize(pk, rec, samples).result[1]
    assert heat.shape[-1] == 3
    assert np.isfinite(heat.numpy()).all()


def test_chart_data_is_thinned_for_the_frontend(pk, monkeypatch):
    model, _ = planted_model(pk)
    rm, rec = recorder(pk, model, steps="0")
    samples = ce.sample(rm, latent(), steps=2)
    vis_mod = ce.pack_module("nodes.ma_visualizer")
    monkeypatch.setattr(vis_mod, "MAX_UI_POINTS", 100)
    chart = visualize(pk, rec, samples).ui["stas_profile"][0]
    assert len(chart["values"]) == T * len(chart["rows"]) * len(chart["cols"]) <= 100
    assert chart["rows"][0] == 0 and chart["rows"][-1] == HP - 1 and chart["cols"][-1] == WP - 1
    assert chart["values"][0] == 1000.0
