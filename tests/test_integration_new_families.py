"""LTX-Video, LTX-2 (audio-video), Kandinsky 5 and Mochi on tiny random-weight models of ComfyUI's own
classes, in a real ComfyUI, checked as the Wan tests of test_integration_families.py are: at every steered
block call the output that leaves STAS equals the formula applied to the output that entered it at the
mask's video tokens, and every other value (LTX-2's audio stream, LTX guide tokens, uncond rows, other
channels) is bit-identical. Also: image-to-video conditioning (noise mask and per-token timesteps; Kandinsky
5's replaced first frame), each family's MA Recorder layout and MA Visualizer text, and the refusal at the
node of a Kandinsky 5 image model and of video models STAS does not handle (Cosmos).
"""
from __future__ import annotations

import functools

import pytest
import torch

from stas_harness import comfy_env as ce, models
from test_integration_families import (ALPHA, CH_TEXT, ObjRec, _Shared, _clone, check_call, object_patched_with_recorders,
                                       patched_with_recorders)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

stas = functools.partial(ce.stas, channels=CH_TEXT, alpha=ALPHA, end_percent=1.0)


def rand(*shape, seed=5):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def ltx_conds(dim=4096, **extra):
    # LTX text conditioning needs an integer attention mask (a float one is an additive bias).
    mask = torch.ones(1, 8, dtype=torch.long)
    return (ce.text_cond(seed=1, dim=dim, attention_mask=mask, **extra),
            ce.text_cond(seed=2, dim=dim, attention_mask=mask, **extra))


def timestep_spy(base, seen):
    """A clone of ``base`` whose diffusion model calls append the timestep's shape to ``seen``."""
    import comfy.patcher_extension as pe

    def spy(executor, *args, **kwargs):
        t = args[1]
        seen.append(tuple(t[0].shape) if isinstance(t, (tuple, list)) else tuple(t.shape))
        return executor(*args, **kwargs)
    m = base.clone()
    m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "test-spy", spy)
    return m


def record_and_visualize(base, lat, conds, grid, family, blocks="1", **sample_kw):
    """STAS on block 1 behind an MA Recorder on every block: the run's layout has ``grid``, and the MA
    Visualizer's summary names ``family`` and the steering at block 1."""
    rec_node = ce.pack_module("nodes.ma_recorder").MARecorder
    steered = stas(base, blocks=blocks)
    rm, recording = rec_node.execute(model=steered, blocks="all", steps="all", record="cond", channels="3,70",
                                     top_k=2, token_stride=0, max_memory_mb=64).result
    samples = ce.sample(rm, lat, steps=2, cfg=2.0, positive=conds[0], negative=conds[1], **sample_kw)
    run = recording.runs[-1]
    assert not run.notes, run.notes
    assert run.layout.family == family and run.layout.grid == grid, (run.layout.family, run.layout.grid)
    n_blocks = run.layout.n_blocks
    assert sorted(run.entries) == [(b, s, 0) for b in range(n_blocks) for s in range(2)]
    e = run.entries[(int(blocks), 0, 0)]
    assert e.has_steer and e.steer_after is not None
    assert tuple(e.mag.shape[1:3]) == (grid[0], grid[1] * grid[2]), tuple(e.mag.shape)  # [sample, T', H'W', ch]
    vis = ce.pack_module("nodes.ma_visualizer").MAVisualizer
    text = vis.execute(recording=recording, latent={"samples": samples}, block=int(blocks), step=0, sample=0,
                       chunk="cond", channel="max", threshold=50.0, log_scale=False, export=False,
                       filename_prefix="x", mask=None).result[4]
    assert family in text and "STAS steering here: channels [3, 70]" in text, text
    return run


# -- LTX-Video 0.9 ------------------------------------------------------------------------------

def test_ltxv_t2v_steers_exactly_the_video_tokens(pk):
    base = models.tiny_ltxv(num_layers=2)
    assert type(base.model).__name__ == "LTXV"
    fam = ce.pack_module("nodes.families").family_of(base.model.diffusion_model)
    assert fam.name == "LTX-Video" and fam.describe_blocks(base.model.diffusion_model) == "0-1 blocks"
    m, rec = patched_with_recorders(pk, base, [("double_block", 1, 1)])
    lat = ce.latent(c=128, t=3, h=4, w=4)
    out = ce.sample(m, lat, steps=2, cfg=2.0, positive=ltx_conds()[0], negative=ltx_conds()[1])
    assert torch.isfinite(out).all()
    pre, post = rec[1]
    assert len(pre.calls) == 2
    for a, b in zip(pre.calls, post.calls):
        check_call(a, b, 0, (3, 4, 4), 0)   # patch size 1: one token per latent pixel, frame-major


def test_ltxv_i2v_noise_mask_per_token_timesteps(pk):
    """LTXVImgToVideo: the first latent frame is the image, kept by the noise mask, so the model runs
    per-token timesteps; STAS steers the first frame's tokens like any other (as for Wan 2.2 TI2V)."""
    lat = ce.latent(c=128, t=3, h=4, w=4)
    lat[:, :, :1] = rand(1, 128, 1, 4, 4)
    mask = torch.ones(1, 1, 3, 4, 4)
    mask[:, :, :1] = 0.0
    seen = []
    base = timestep_spy(models.tiny_ltxv(num_layers=2), seen)
    m, rec = patched_with_recorders(pk, base, [("double_block", 1, 1)])
    pos, neg = ltx_conds()
    out = ce.sample(m, lat, steps=2, cfg=2.0, positive=pos, negative=neg, noise_mask=mask)
    assert torch.isfinite(out).all()
    assert seen and all(s[-1] == 48 or (len(s) >= 2 and s[1] == 48) for s in seen), f"no per-token timesteps: {seen}"
    pre, post = rec[1]
    for a, b in zip(pre.calls, post.calls):
        check_call(a, b, 0, (3, 4, 4), 0)
    torch.testing.assert_close(out[:, :, :1], lat[:, :, :1], rtol=0, atol=1e-5, msg="the image frame was not kept")


def test_ltxv_guide_frames_are_not_video(pk):
    """LTXVAddGuide appends a guide's latent frames after the video and its tokens after the video tokens:
    STAS steers the video grid only (its max over the video tokens) and leaves the guide tokens alone."""
    import comfy_extras.nodes_lt as lt
    lat = ce.latent(c=128, t=3, h=4, w=4)
    pos, neg = ltx_conds()
    pos, neg, lat2, mask = lt.LTXVAddGuide.append_keyframe(pos, neg, 8, lat, torch.ones(1, 1, 3, 4, 4),
                                                           rand(1, 128, 1, 4, 4), 1.0, (8, 32, 32))
    assert lat2.shape[2] == 4 and pos[0][1]["keyframe_idxs"].shape[2] == 16
    m, rec = patched_with_recorders(pk, models.tiny_ltxv(num_layers=2), [("double_block", 1, 1)])
    out = ce.sample(m, lat2, steps=2, cfg=2.0, positive=pos, negative=neg, noise_mask=mask)
    assert torch.isfinite(out).all()
    pre, post = rec[1]
    assert len(pre.calls) == 2
    for a, b in zip(pre.calls, post.calls):
        check_call(a, b, 0, (3, 4, 4), 0, suffix=16)
    # the MA Recorder records the video's 3 latent frames, not the guide's frame after them
    record_and_visualize(models.tiny_ltxv(num_layers=2), lat2, (pos, neg), (3, 4, 4), "LTX-Video", noise_mask=mask)


# -- LTX-2 (audio-video) -----------------------------------------------------------------------

class AVRec(_Shared):
    """patches_replace["dit"] patch for LTX-2 blocks, whose img is (video, audio): runs its inner, records."""

    def __init__(self, inner=None):
        self.inner, self.calls = inner, []

    def __call__(self, args, extra):
        out = self.inner(args, extra) if self.inner is not None else extra["original_block"](args)
        assert isinstance(out["img"], tuple) and len(out["img"]) == 2, type(out["img"])
        to = args.get("transformer_options") or {}
        self.calls.append(dict(img=_clone(out["img"][0]), audio=_clone(out["img"][1]),
                               cond_or_uncond=list(to.get("cond_or_uncond") or []),
                               sigma=float(to["sigmas"].reshape(-1)[0])))
        return out


def _require_ltxav():
    if not models.has_ltxav():
        pytest.skip(f"ComfyUI {ce.comfy_version()} has no LTX-2 (comfy.ldm.lightricks.av_model)")


def av_latent(t=3, h=4, w=4, audio=5):
    import comfy.nested_tensor
    return comfy.nested_tensor.NestedTensor((ce.latent(c=128, t=t, h=h, w=w), torch.zeros(1, 8, audio, 16)))


@pytest.mark.parametrize("i2v", [False, True], ids=["t2av", "i2av_noise_mask"])
def test_ltx2_steers_video_never_audio(pk, i2v):
    """LTX-2's block img is (video, audio): STAS steers the video tensor (M over video tokens only),
    the audio tensor leaves bit-identical, and the pair goes back as a pair."""
    _require_ltxav()
    import comfy.nested_tensor
    base = models.tiny_ltxav(num_layers=2)
    assert type(base.model).__name__ == "LTXAV"
    seen = []
    base = timestep_spy(base, seen)
    m0 = base.clone()
    pre = AVRec()
    m0.set_model_patch_replace(pre, "dit", "double_block", 1)
    patched = stas(m0, blocks="1")
    stas_patch = patched.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 1)]
    assert isinstance(stas_patch, pk.hooks.BlockReplacePatch) and stas_patch.inner is pre
    m = patched.clone()
    post = AVRec(inner=stas_patch)
    m.set_model_patch_replace(post, "dit", "double_block", 1)
    lat = av_latent()
    kw = {}
    if i2v:
        v = lat.tensors[0]
        v[:, :, :1] = rand(1, 128, 1, 4, 4)
        vm = torch.ones(1, 1, 3, 4, 4)
        vm[:, :, :1] = 0.0
        kw["noise_mask"] = comfy.nested_tensor.NestedTensor((vm, torch.ones(1, 1, 5, 16)))
    pos, neg = ltx_conds(dim=128)
    out = ce.sample(m, lat, steps=2, cfg=2.0, positive=pos, negative=neg, **kw)
    assert getattr(out, "is_nested", False) and all(torch.isfinite(t).all() for t in out.unbind())
    assert len(pre.calls) == 2
    for a, b in zip(pre.calls, post.calls):
        check_call(a, b, 0, (3, 4, 4), 0)
        assert torch.equal(a["audio"], b["audio"]), "STAS touched the audio stream"
    if i2v:
        assert any(len(s) >= 2 and s[1] == 48 for s in seen), f"no per-token video timesteps: {seen}"
        torch.testing.assert_close(out.unbind()[0][:, :, :1], lat.unbind()[0][:, :, :1], rtol=0, atol=1e-5,
                                   msg="the image frame was not kept")


def test_ltx2_recorder_and_visualizer(pk):
    _require_ltxav()
    record_and_visualize(models.tiny_ltxav(num_layers=2), av_latent(), ltx_conds(dim=128), (3, 4, 4), "LTX-Video")


def test_ltxv_recorder_and_visualizer(pk):
    record_and_visualize(models.tiny_ltxv(num_layers=2), ce.latent(c=128, t=3, h=4, w=4), ltx_conds(), (3, 4, 4),
                         "LTX-Video")


# -- Kandinsky 5 (object patch: its block-replace hook cannot run the block) --------------------

def _require_kandinsky5():
    if not models.has_kandinsky5():
        pytest.skip(f"ComfyUI {ce.comfy_version()} has no Kandinsky 5 (comfy.ldm.kandinsky5)")


def k5_conds(**extra):
    pooled = rand(1, 768, seed=11)
    return (ce.text_cond(seed=1, dim=3584, pooled_output=pooled, **extra),
            ce.text_cond(seed=2, dim=3584, pooled_output=pooled, **extra))


class K5Rec(ObjRec):
    """Object patch for Kandinsky 5's visual_transformer_blocks.i.forward (returns the hidden states alone)."""

    def __call__(self, *args, **kwargs):
        out = self.inner(*args, **kwargs) if self.inner is not None else type(self.block).forward(self.block, *args,
                                                                                                   **kwargs)
        to = kwargs.get("transformer_options") or {}
        self.calls.append(dict(img=_clone(out), cond_or_uncond=list(to.get("cond_or_uncond") or []),
                               sigma=float(to["sigmas"].reshape(-1)[0])))
        return out


@pytest.mark.parametrize("i2v", [False, True], ids=["t2v", "i2v_first_frame_replaced"])
def test_kandinsky5_object_patch(pk, i2v):
    """Blocks are reached by an object patch that chains the one already there (another pack's); the
    user's MODEL samples unpatched afterwards. I2V (Kandinsky5ImageToVideo) replaces the first latent
    frame (time_dim_replace) and masks it (concat_mask): steered as any first frame."""
    _require_kandinsky5()
    base = models.tiny_kandinsky5(num_visual_blocks=3)
    assert type(base.model).__name__ == "Kandinsky5"
    m, pre, post = object_patched_with_recorders(pk, base, "visual_transformer_blocks",
                                                 base.model.diffusion_model.visual_transformer_blocks, rec=K5Rec)
    lat = ce.latent(c=16, t=3, h=8, w=8)
    extra = {}
    if i2v:
        mask = torch.ones(1, 1, 3, 8, 8)
        mask[:, :, :1] = 0.0
        extra = dict(time_dim_replace=rand(1, 16, 1, 8, 8), concat_mask=mask)
    pos, neg = k5_conds(**extra)
    unpatched = ce.sample(base, lat, steps=2, cfg=2.0, positive=pos, negative=neg)
    out = ce.sample(m, lat, steps=2, cfg=2.0, positive=pos, negative=neg)
    assert torch.isfinite(out).all()
    assert len(pre.calls) == 2
    for a, b in zip(pre.calls, post.calls):
        check_call(a, b, 0, (3, 4, 4), 0)
    assert not torch.equal(out, unpatched)
    assert torch.equal(ce.sample(base, lat, steps=2, cfg=2.0, positive=pos, negative=neg), unpatched)


def test_kandinsky5_without_other_patch_and_recorder(pk):
    """Alone on its object slot (it runs the block itself), STAS and the MA Recorder see the (t, h, w) layout."""
    _require_kandinsky5()
    run = record_and_visualize(models.tiny_kandinsky5(num_visual_blocks=3), ce.latent(c=16, t=3, h=8, w=8),
                               k5_conds(), (3, 4, 4), "Kandinsky 5")
    assert run.layout.n_blocks == 3


# -- Mochi ----------------------------------------------------------------------------------------

def mochi_conds():
    mask = torch.ones(1, 8, dtype=torch.long)
    return (ce.text_cond(seed=1, dim=256, attention_mask=mask), ce.text_cond(seed=2, dim=256, attention_mask=mask))


def test_mochi_steers_exactly_the_video_tokens(pk):
    base = models.tiny_mochi(depth=2)
    assert type(base.model).__name__ == "GenmoMochi"
    m, rec = patched_with_recorders(pk, base, [("double_block", 1, 1)])
    lat = ce.latent(c=12, t=3, h=8, w=8)
    pos, neg = mochi_conds()
    out = ce.sample(m, lat, steps=2, cfg=2.0, positive=pos, negative=neg)
    assert torch.isfinite(out).all()
    pre, post = rec[1]
    assert len(pre.calls) == 2
    for a, b in zip(pre.calls, post.calls):
        check_call(a, b, 0, (3, 4, 4), 0)
    record_and_visualize(base, lat, (pos, neg), (3, 4, 4), "Mochi")


# -- refused at the node -----------------------------------------------------------------------------

@pytest.mark.slow
def test_kandinsky5_image_and_unhandled_video_models_are_refused(pk):
    """At node execution, before any sampling: the message names the model and lists the supported families."""
    cases = [(models.tiny_sd3, "OpenAISignatureMMDITWrapper")]
    if models.has_kandinsky5():
        cases.append((lambda: models.tiny_kandinsky5(image=True), "Kandinsky 5 image models"))
    if models.has_cosmos_predict2():
        cases.append((models.tiny_cosmos_predict2, "MiniTrainDIT"))
    for build, label in cases:
        with pytest.raises(ValueError) as ei:
            stas(build(), blocks="middle")
        msg = str(ei.value)
        assert msg.startswith(f"STAS Model Patch: STAS does not support {label}"), msg
        for fam in ("Wan", "HunyuanVideo", "CogVideoX", "LTX-Video", "LTX-2", "Kandinsky 5", "Mochi"):
            assert fam in msg, f"the error does not name {fam}: {msg}"


def test_causal_wan_is_refused_by_its_class():
    """Causal (autoregressive, KV-cache) Wan shares WanModel's weights but generates chunk by chunk: its class is
    refused by name with the reason and what to use instead, as the node does (families.family_of)."""
    ce.require_comfy()
    try:
        import comfy.ldm.wan.ar_model as ar
    except ImportError:
        pytest.skip(f"ComfyUI {ce.comfy_version()} has no causal Wan (comfy.ldm.wan.ar_model)")
    import comfy.ops
    with torch.device("meta"):
        dm = ar.CausalWanModel(dim=128, ffn_dim=256, num_heads=2, num_layers=1, operations=comfy.ops.disable_weight_init)
    with pytest.raises(ValueError, match=r"^STAS does not support CausalWanModel models \(autoregressive Wan: .*\)\. "
                                         r"Use a Wan 2\.1/2\.2 .* Supported: Wan .*Mochi"):
        ce.pack_module("nodes.families").family_of(dm)


def test_mask_preview_of_an_ltx2_latent(pk):
    """Boundary Mask Builder takes LTX-2's NestedTensor (video, audio) latent and previews its video."""
    _require_ltxav()
    import comfy.nested_tensor
    video = ce.latent(c=128, t=4, h=6, w=10)
    av = comfy.nested_tensor.NestedTensor((video, torch.zeros(1, 8, 25, 16)))
    _, prev_av = ce.run_node(pk.mask, latent={"samples": av}, patch_hw=1)[:2]
    _, prev_v = ce.run_node(pk.mask, latent={"samples": video}, patch_hw=1)[:2]
    _, prev_p2 = ce.run_node(pk.mask, latent={"samples": video}, patch_hw=2)[:2]
    assert torch.equal(prev_av, prev_v) and not torch.equal(prev_v, prev_p2)
