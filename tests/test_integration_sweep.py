"""STAS Sweep in a real ComfyUI: a tiny Wan with a planted massive-activation channel, decoded by a VAE by
numbers whose output carries a planted jump at every chunk seam (a random-weight WanVAE's output hardly
depends on its latent, so it could rank nothing). The sweep's ranking
equals one computed here from renders made with STAS Model Patch (frame statistics in numpy, the seam
ratio from the Temporal Seam Meter node), its MODEL equals STAS Model Patch with the winner bit for bit, a
window that steers no step is flagged, an interrupt leaves the input MODEL unpatched, and bad inputs are
refused before the first render."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from stas_harness import comfy_env as ce
from stas_harness.models import tiny_wan

pytestmark = pytest.mark.integration

MA = 77


class SeamVAE:
    """A causal video VAE by its numbers (4 pixel frames per latent frame after the first, 8x nearest
    upsampling; RGB = sigmoid of latent channels 0-2 over 4): inside a chunk the frames drift a quarter of the way
    toward the next latent frame, then the next chunk jumps to it, so every chunk seam carries a planted
    jump whose size follows the latent, which STAS changes at the boundary tokens."""

    def decode(self, z):
        rgb = torch.sigmoid(z[:, :3].float() / 4)        # [B, 3, T, h, w]
        frames = [rgb[:, :, 0]]
        for c in range(1, rgb.shape[2]):
            nxt = rgb[:, :, min(c + 1, rgb.shape[2] - 1)]
            frames += [rgb[:, :, c] + 0.25 * (j / 4) * (nxt - rgb[:, :, c]) for j in range(4)]
        x = torch.stack(frames, 2).repeat_interleave(8, 3).repeat_interleave(8, 4)
        return x.permute(0, 2, 3, 4, 1).contiguous()     # [B, T, H, W, 3]


def planted_wan():
    m = tiny_wan()
    with torch.no_grad():   # channel MA of the residual stream: massive, and different at every token
        m.model.diffusion_model.patch_embedding.weight[MA] *= 1000.0
    return m


def sweep(pk, model, vae, **kw):
    node = pk.module("nodes.sweep").StasSweep
    args = dict(model=model, positive=ce.text_cond(seed=1), negative=ce.text_cond(seed=2),
                latent_image={"samples": ce.latent(t=3)}, vae=vae, seed=7, steps=3, cfg=2.0, sampler_name="euler",
                scheduler="simple", alphas="0, 1", blocks="middle", windows="0-0.34, 0-1", tolerance=0.5)
    args.update(kw)
    return node.execute(**args)


# -- an independent computation of the documented score ----------------------------------------------

def frames_of(vae, samples):
    x = vae.decode(samples)
    return x.reshape(-1, *x.shape[-3:])


def stats(pk, frames):
    """(seam ratio from the Temporal Seam Meter node, flicker, motion, sharpness) computed here in numpy."""
    seam = pk.meter.execute(images=frames, temporal_compression=4, causal_first_frame=True, flag_contrast=1.5,
                            motion_compensation=True, analysis_size=320).result[2]
    f = frames[..., :3].double().numpy()
    flicker = np.abs(np.diff(f, axis=0)).mean()
    motion = np.abs(f[4:] - f[:-4]).mean()
    y = f @ np.array([0.299, 0.587, 0.114])
    lap = y[:, :-2, 1:-1] + y[:, 2:, 1:-1] + y[:, 1:-1, :-2] + y[:, 1:-1, 2:] - 4 * y[:, 1:-1, 1:-1]
    return seam, flicker, motion, np.abs(lap).mean()


def test_ranking_equals_an_independent_computation_and_the_model_equals_stas_model_patch(pk):
    base, vae = planted_wan(), SeamVAE()
    pos, neg, lat = ce.text_cond(seed=1), ce.text_cond(seed=2), ce.latent(t=3)
    out = sweep(pk, base, vae)
    model, grid, comparison, text = out.result
    assert out.ui.as_dict() == {"text": (text,)}   # shown in the node

    render = lambda m: frames_of(vae, ce.sample(m, lat, steps=3, cfg=2.0, positive=pos, negative=neg, seed=7))  # noqa: E731
    b = stats(pk, render(base))
    rows = []
    for alpha in (0.0, 1.0):
        for start, end in ((0.0, 0.34), (0.0, 1.0)):
            s = stats(pk, render(ce.stas(base, alpha=alpha, blocks="middle", start_percent=start, end_percent=end)))
            score = 0.5 * s[0] / b[0] + 0.5 * s[1] / b[1]
            ok = s[2] >= 0.5 * b[2] and s[3] >= 0.5 * b[3] and score < 1.0
            rows.append((score, ok, dict(alpha=alpha, blocks="middle", start_percent=start, end_percent=end)))
    scores = sorted(r[0] for r in rows)
    assert min(b - a for a, b in zip(scores, scores[1:])) > 2e-4, f"scores too close to rank: {scores}"
    lines = text.splitlines()[2:6]
    got = [float(line[50:].split()[0]) for line in lines]   # the score column, in grid order
    assert np.allclose(got, [r[0] for r in rows], rtol=0, atol=1e-4), (got, rows)
    ok = [i for i, r in enumerate(rows) if r[1]]
    assert ok, f"no variant qualified: {rows}"
    want = min(ok, key=lambda i: rows[i][0])
    assert lines[want].startswith("* "), text
    assert sum(line.startswith("* ") for line in lines) == 1

    settings = rows[want][2]
    ref = ce.stas(base, **settings)
    a = ce.sample(model, lat, steps=3, cfg=2.0, positive=pos, negative=neg, seed=7)
    r = ce.sample(ref, lat, steps=3, cfg=2.0, positive=pos, negative=neg, seed=7)
    assert torch.equal(a, r), "the sweep's MODEL differs from STAS Model Patch with the winning settings"
    assert grid.shape[0] == 1 and grid.shape[-1] == 3 and comparison.shape[0] == 9
    assert comparison.shape[2] == 2 * 64 + 4 and torch.equal(comparison[:, :, :64], render(base))
    # the input MODEL is untouched
    assert "dit" not in base.model_options.get("transformer_options", {}).get("patches_replace", {})


def test_window_that_steers_no_step_is_flagged_and_never_wins(pk):
    out = sweep(pk, planted_wan(), SeamVAE(), alphas="1.0", blocks="middle", windows="0.97-1", steps=2)
    model, _, _, text = out.result
    assert "steers no step of 2" in text and "No variant scored below" in text
    assert not any(line.startswith("* ") for line in text.splitlines())
    assert "dit" not in model.model_options.get("transformer_options", {}).get("patches_replace", {})


def test_interrupt_between_and_within_renders_leaves_the_input_unpatched(pk):
    import comfy.model_management as mm
    import comfy.patcher_extension as pe
    base, vae = planted_wan(), SeamVAE()
    calls = [0]

    def stop_in_third_render(executor, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 2 * 3 + 2:   # 3 steps a render, one call each at cfg 1: the 2nd step of render 3
            mm.interrupt_current_processing(True)
        return executor(*args, **kwargs)

    spied = base.clone()
    spied.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "test-interrupt", stop_in_third_render)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            sweep(pk, spied, vae, cfg=1.0)
    finally:
        mm.interrupt_current_processing(False)
    assert calls[0] == 2 * 3 + 2, f"the sweep ran on after the interrupt ({calls[0]} model calls)"
    assert set(spied.wrappers.get(pe.WrappersMP.APPLY_MODEL, {})) == set()
    assert "dit" not in base.model_options.get("transformer_options", {}).get("patches_replace", {})
    lat = ce.latent(t=3)
    assert torch.isfinite(ce.sample(base, lat, steps=2)).all()


@pytest.mark.parametrize("kw,msg", [
    (dict(alphas="0.5, x"), "STAS Sweep: alphas: 'x' is not a number"),
    (dict(windows="0.4-0.2"), "STAS Sweep: windows: '0.4-0.2' is not a window"),
    (dict(alphas="0.1,0.2,0.3,0.4,0.5", blocks="0;1;2;3"), "more than 16; remove some values"),
    (dict(blocks="middle; 99"), "STAS Sweep: "),
    (dict(latent_image={"samples": torch.zeros(1, 16, 8, 8)}), "STAS Sweep: the latent has shape"),
])
def test_bad_inputs_are_refused_before_the_first_render(pk, kw, msg):
    import comfy.patcher_extension as pe
    base = planted_wan()
    calls = [0]

    def count(executor, *args, **kwargs):
        calls[0] += 1
        return executor(*args, **kwargs)

    spied = base.clone()
    spied.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "test-count", count)
    with pytest.raises(ValueError) as e:
        sweep(pk, spied, SeamVAE(), **kw)
    assert str(e.value).startswith("STAS Sweep: ") and msg in str(e.value), str(e.value)
    assert calls[0] == 0


def test_preset_round_trip_refusal_and_no_overwrite(pk, tmp_path, monkeypatch, caplog):
    """preset: the winner's settings, the channels it steered and the model's fingerprint in an MA profile, which
    Load MA Profile loads and STAS Model Patch steers as the sweep's MODEL does; another checkpoint refuses it, a
    file that is no preset is never overwritten, and STAS Model Patch says when its settings differ from it."""
    import json

    import folder_paths
    from stas_harness import models
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "models"))   # the testbed stays untouched
    folder = tmp_path / "models" / "stas_profiles"
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "stas_profiles", ([str(folder)], {".safetensors"}))
    base, lat = planted_wan(), ce.latent(t=3)
    model, _, _, text = sweep(pk, base, SeamVAE(), preset="wan_sweep").result
    assert f"Preset saved: {folder / 'wan_sweep.safetensors'}" in text
    prof = pk.load.execute(profile_name="wan_sweep.safetensors").result[0]
    settings = json.loads(prof.info["preset"])
    assert prof.info["made_by"] == "STAS Sweep" and prof.fingerprint is not None
    assert prof.channels and all(c == (MA,) for c in prof.channels.values()), prof.channels
    run = lambda m: ce.sample(m, lat, steps=3, cfg=2.0, seed=7)  # noqa: E731
    assert torch.equal(run(ce.stas(base, profile=prof, **settings)), run(model))

    other = models.load_random(models.wan_module(), seed=1)
    with pytest.raises(ValueError, match="STAS Model Patch: profile: made on another Wan model"):
        ce.stas(other, profile=prof)
    with caplog.at_level("WARNING", logger="comfyui-stas"):
        ce.stas(base, profile=prof, **{**settings, "alpha": settings["alpha"] + 0.25})
    assert "the profile is a STAS Sweep preset swept with" in caplog.text and "Set those" in caplog.text

    pk.profile.MAProfile("Wan", 128, 4, {2: (MA,)}).save(str(folder / "plain.safetensors"))
    with pytest.raises(ValueError, match="STAS Sweep: preset: .*plain.safetensors exists and is no STAS Sweep"):
        sweep(pk, base, SeamVAE(), preset="plain")


def test_custom_sampler_sweep_equals_the_ksampler_sweep(pk):
    """STAS Sweep (Custom Sampler) with a CFGGuider, euler, the simple schedule's sigmas and RandomNoise renders
    exactly what STAS Sweep renders with those settings: the same table, the same winner, the guider untouched."""
    import comfy.samplers
    import comfy_extras.nodes_custom_sampler as ncs
    base, vae = planted_wan(), SeamVAE()
    pos, neg = ce.text_cond(seed=1), ce.text_cond(seed=2)
    guider = comfy.samplers.CFGGuider(base)
    guider.set_conds(pos, neg)
    guider.set_cfg(2.0)
    sigmas = comfy.samplers.calculate_sigmas(base.get_model_object("model_sampling"), "simple", 3)
    node = pk.module("nodes.sweep").StasSweepCustom
    model, grid, comparison, text = node.execute(
        noise=ncs.Noise_RandomNoise(7), guider=guider, sampler=comfy.samplers.sampler_object("euler"), sigmas=sigmas,
        latent_image={"samples": ce.latent(t=3)}, vae=vae, alphas="0, 1", blocks="middle", windows="0-0.34, 0-1",
        tolerance=0.5).result
    want = sweep(pk, base, vae).result
    assert text == want[3]
    assert torch.equal(comparison, want[2])
    assert guider.model_patcher is base and "dit" not in base.model_options.get("transformer_options", {}).get(
        "patches_replace", {})


def test_a_window_that_steers_no_step_is_not_rendered(pk):
    """Such a variant would render the baseline again: only the baseline and the variants that steer are sampled."""
    import comfy.patcher_extension as pe
    calls = [0]

    def count(executor, *args, **kwargs):
        calls[0] += 1
        return executor(*args, **kwargs)

    spied = planted_wan().clone()
    spied.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "test-count", count)
    text = sweep(pk, spied, SeamVAE(), alphas="1", blocks="middle", windows="0-1, 0.97-1", steps=2, cfg=1.0).result[3]
    assert calls[0] == 2 * 2, calls   # baseline + the one variant that steers, 2 steps each at cfg 1
    assert "steers no step of 2, not rendered" in text
