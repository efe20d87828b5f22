"""Every supported model family and variant, on tiny random weights, in a real ComfyUI.

Each model is built from ComfyUI's own module class and loaded through
``comfy.sd.load_diffusion_model_state_dict``, so ComfyUI's own detection picks the
model_base class (checked by name).  Each test then samples the STAS-patched model with
the conditioning that variant really gets (concat image, CLIP vision, VACE frames,
reference latents, camera conditions, per-frame timesteps) and checks, at every steered
block call, the block output that leaves STAS against the block output that entered it:

* a test-only *pre* patch installed before STAS (STAS chains it as its inner block)
  records what the block produced;
* a test-only *post* patch installed after STAS (wrapping STAS's patch) records what
  leaves STAS;
* the expected tensor is computed here from the pre record, from the real token layout
  of that call (worked out independently of the pack: prefix reference tokens, text
  tokens of HunyuanVideo single blocks found by matching tensors, the latent grid), and
  the steering formula.  Post must equal it bit for bit: steered values equal the
  formula, and every other value - reference tokens, text tokens, uncond rows, other
  channels - is untouched.

HunyuanVideo 1.5 (T2V, I2V, super-resolution; ComfyUI after 0.3.64) gets the same check, and its
MA Recording is compared with the block outputs bit for bit.

Also: appended Phantom subject frames stay untouched, Wan 2.2 A14B experts are each gated
by their own model_sampling (also with a shift node placed after STAS), and a model of any
other family (also HunyuanImage 2.1, which shares HunyuanVideo's class) is refused at node
execution with an error naming the supported ones.
"""
from __future__ import annotations

import functools
import types

import pytest
import torch

from stas_harness import comfy_env as ce, models
from stas_harness.comfy_env import latent

pytestmark = pytest.mark.integration

ALPHA = 1.5
CHANNELS = (3, 70)   # explicit, so the expected values need no re-run of channel detection
CH_TEXT = ",".join(str(c) for c in CHANNELS)

# STAS Model Patch as ComfyUI calls it, at its declared defaults; these channels and alpha, every step.
stas = functools.partial(ce.stas, channels=CH_TEXT, alpha=ALPHA, end_percent=1.0)


# -- recording patches (test only) ----------------------------------------------------

def _clone(t):
    return None if t is None else t.detach().clone()


class _Shared:
    # Older ComfyUI deep-copies model_options on clone(): keep one recorder, one record list.
    def __deepcopy__(self, memo):
        return self


class Rec(_Shared):
    """A patches_replace["dit"] patch that runs its inner (the block, or STAS) and records."""

    def __init__(self, inner=None):
        self.inner, self.calls = inner, []

    def __call__(self, args, extra):
        inp = _clone(args["img"])
        out = self.inner(args, extra) if self.inner is not None else extra["original_block"](args)
        to = args.get("transformer_options") or {}
        self.calls.append(dict(
            inp=inp, img=_clone(out["img"]), txt=_clone(out.get("txt")),
            cond_or_uncond=list(to.get("cond_or_uncond") or []),
            sigma=float(to["sigmas"].reshape(-1)[0]), img_slice=to.get("img_slice")))
        return out


class ObjRec(_Shared):
    """An object patch for ``blocks.i.forward`` (CogVideoX) that runs its inner and records."""

    def __init__(self, block, inner=None):
        self.block, self.inner, self.calls = block, inner, []

    def __call__(self, *args, **kwargs):
        if self.inner is not None:
            out = self.inner(*args, **kwargs)
        else:
            out = type(self.block).forward(self.block, *args, **kwargs)
        to = kwargs.get("transformer_options") or {}
        self.calls.append(dict(img=_clone(out[0]), txt=_clone(out[1]),
                               cond_or_uncond=list(to.get("cond_or_uncond") or []),
                               sigma=float(to["sigmas"].reshape(-1)[0])))
        return out


def object_patched_with_recorders(pk, base, attr, blocks, rec=ObjRec):
    """base -> another pack's object patch on ``<attr>.1.forward`` -> STAS on block 1 -> one more patch on top.

    Returns (model, pre, post). Also checks that STAS chained the pre patch.
    """
    name = f"diffusion_model.{attr}.1.forward"
    m0 = base.clone()
    pre = rec(blocks[1])
    m0.add_object_patch(name, pre)
    patched = stas(m0, blocks="1")
    stas_patch = patched.object_patches[name]
    assert isinstance(stas_patch, pk.hooks.BlockForwardPatch) and stas_patch.inner is pre
    m = patched.clone()
    post = rec(blocks[1], inner=stas_patch)
    m.add_object_patch(name, post)
    return m, pre, post


def patched_with_recorders(pk, base, refs, **stas_kw):
    """base -> pre recorders -> STAS on ``refs`` (kind, index, flat) -> post recorders.

    Returns (model, {flat: (pre, post)}).  Also checks that STAS chained each pre patch.
    """
    m0 = base.clone()
    pres = {}
    for kind, idx, flat in refs:
        pres[flat] = Rec()
        m0.set_model_patch_replace(pres[flat], "dit", kind, idx)
    patched = stas(m0, blocks=",".join(str(f) for _, _, f in refs), **stas_kw)
    m = patched.clone()
    out = {}
    for kind, idx, flat in refs:
        stas_patch = patched.model_options["transformer_options"]["patches_replace"]["dit"][(kind, idx)]
        assert isinstance(stas_patch, pk.hooks.BlockReplacePatch), "STAS did not install its block patch"
        assert stas_patch.inner is pres[flat], "STAS overwrote the patch that was on the block instead of chaining it"
        post = Rec(inner=stas_patch)
        m.set_model_patch_replace(post, "dit", kind, idx)
        out[flat] = (pres[flat], post)
    return m, out


# -- the expected result, computed independently of the pack -------------------------

def default_tokens(grid):
    """Default STAS_MASK: the whole first latent frame, then the top and bottom token rows
    of every later frame; tokens in (t, h, w) order."""
    t, h, w = grid
    frame = h * w
    idx = list(range(frame))
    for f in range(1, t):
        idx += list(range(f * frame, f * frame + w)) + list(range((f + 1) * frame - w, (f + 1) * frame))
    return torch.tensor(sorted(set(idx)), dtype=torch.long)


def steered_rows(cond_or_uncond, batch, apply_to=(0,)):
    per = batch // len(cond_or_uncond)
    return [c * per + j for c, flag in enumerate(cond_or_uncond) if flag in apply_to for j in range(per)]


def expected(pre, start, grid, rows, alpha=ALPHA, lam=1.0, channels=CHANNELS):
    exp = pre.clone()
    n = grid[0] * grid[1] * grid[2]
    tok = default_tokens(grid)
    ch = torch.tensor(channels, dtype=torch.long)
    for b in rows:
        vis = pre[b, start:start + n][:, ch].float()                  # [N, K]
        ref = vis.abs().amax(dim=0) * alpha                           # [K]
        cur = vis[tok]                                                # [S, K]
        tgt = torch.where(cur >= 0, ref, -ref)
        new = tgt if lam == 1.0 else torch.lerp(cur, tgt, lam)
        exp[b, (start + tok)[:, None], ch[None, :]] = new.to(pre.dtype)
    return exp


def check_call(pre_call, post_call, start, grid, prefix_len_total, apply_to=(0,), lam=1.0, suffix=0):
    """post == formula(pre) at the steered rows/tokens/channels, bit-identical elsewhere.
    ``prefix_len_total``/``suffix``: tokens before/after the video tokens in this tensor."""
    pre, post = pre_call["img"], post_call["img"]
    assert pre.shape == post.shape
    n = grid[0] * grid[1] * grid[2]
    assert pre.shape[1] == prefix_len_total + n + suffix, \
        f"block output has {pre.shape[1]} tokens, the layout says {prefix_len_total} + {n} + {suffix}"
    rows = steered_rows(pre_call["cond_or_uncond"], pre.shape[0], apply_to)
    assert rows, "no steered row in this call"
    exp = expected(pre, start, grid, rows, lam=lam)
    if lam == 1.0:
        assert torch.equal(post, exp), _diff(post, exp)
    else:
        torch.testing.assert_close(post, exp, rtol=0, atol=1e-6)
        keep = torch.ones_like(pre, dtype=torch.bool)
        tok = default_tokens(grid) + start
        for b in rows:
            keep[b, tok[:, None], torch.tensor(CHANNELS)[None, :]] = False
        assert torch.equal(post[keep], pre[keep]), "values outside the steered set changed"
    assert not torch.equal(post, pre), "STAS changed nothing"
    if pre_call.get("txt") is not None:
        assert torch.equal(post_call["txt"], pre_call["txt"]), "STAS touched the text stream"


def _diff(a, b):
    d = (a != b).nonzero()
    return f"{d.shape[0]} values differ from the formula, first at {d[:5].tolist()}"


def grid_of(lat, patch=(1, 2, 2)):
    return tuple(-(-s // p) for s, p in zip(lat.shape[-3:], patch))


def clip_vision(tokens=257, seed=3):
    g = torch.Generator().manual_seed(seed)
    return types.SimpleNamespace(penultimate_hidden_states=torch.randn(1, tokens, 1280, generator=g))


def conds(**extra):
    return ce.text_cond(seed=1, **extra), ce.text_cond(seed=2, **extra)


def rand(*shape, seed=5):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- Wan 2.1 / 2.2 ----------------------------------------------------------------------

def _wan_variant_run(pk, variant, model_base_name, lat, cond_extra, block=1, lam=1.0, base=None):
    base = base if base is not None else models.tiny_wan_variant(variant)
    assert type(base.model).__name__ == model_base_name
    m, rec = patched_with_recorders(pk, base, [("double_block", block, block)], blend=lam)
    pos, neg = conds(**cond_extra)
    out = ce.sample(m, lat, steps=2, cfg=2.0, positive=pos, negative=neg)
    assert torch.isfinite(out).all()
    pre, post = rec[block]
    assert len(pre.calls) == 2 and len(post.calls) == 2
    for a, b in zip(pre.calls, post.calls):
        check_call(a, b, 0, grid_of(lat), 0, lam=lam)
    return base, pre, post


def test_wan21_t2v(pk):
    _wan_variant_run(pk, "t2v", "WAN21", latent(), {})


def test_wan21_t2v_blend(pk):
    _wan_variant_run(pk, "t2v", "WAN21", latent(t=4), {}, block=2, lam=0.5)


def test_wan21_i2v(pk):
    lat = latent()
    mask = torch.ones(1, 1, 3, 8, 8)
    mask[:, :, :1] = 0.0
    _wan_variant_run(pk, "i2v", "WAN21", lat, dict(concat_latent_image=rand(1, 16, 3, 8, 8), concat_mask=mask,
                                                   clip_vision_output=clip_vision()))


def test_wan21_first_last_frame(pk):
    base = models.tiny_wan_variant("flf")
    assert base.model.diffusion_model.img_emb.emb_pos is not None, "not the FLF variant"
    mask = torch.ones(1, 1, 3, 8, 8)
    mask[:, :, 0] = mask[:, :, -1] = 0.0
    _wan_variant_run(pk, "flf", "WAN21", latent(), dict(concat_latent_image=rand(1, 16, 3, 8, 8), concat_mask=mask,
                                                        clip_vision_output=clip_vision(tokens=514)), base=base)


def test_wan21_vace(pk):
    lat = latent()
    _wan_variant_run(pk, "vace", "WAN21_Vace", lat, dict(vace_frames=[rand(1, 32, 3, 8, 8)],
                                                          vace_mask=[torch.ones(1, 64, 3, 8, 8)], vace_strength=[1.0]))


def test_wan21_camera(pk):
    _wan_variant_run(pk, "camera", "WAN21_Camera", latent(),
                     dict(camera_conditions=rand(1, 24, 3, 64, 64) * 0.1, concat_latent_image=rand(1, 16, 3, 8, 8),
                          clip_vision_output=clip_vision()))


def test_wan22_ti2v_5b_per_frame_timesteps(pk):
    """Wan 2.2 TI2V 5B: 48-channel latent, first frame fixed by the noise mask, so the model
    runs per-frame timesteps (WAN22.process_timestep)."""
    lat = latent(c=48, t=3)
    lat[:, :, :1] = rand(1, 48, 1, 8, 8)
    mask = torch.ones(1, 1, 3, 8, 8)
    mask[:, :, :1] = 0.0
    base = models.tiny_wan_variant("ti2v_5b")
    assert type(base.model).__name__ == "WAN22"
    seen_t = []
    dm = base.model.diffusion_model

    def spy(executor, *args, **kwargs):   # confirms the per-frame timesteps really reach the model
        seen_t.append(tuple(args[1].shape))
        return executor(*args, **kwargs)

    import comfy.patcher_extension as pe
    base = base.clone()
    base.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "test-spy", spy)
    m, rec = patched_with_recorders(pk, base, [("double_block", 1, 1)])
    out = ce.sample(m, lat, steps=2, cfg=2.0, noise_mask=mask)
    assert torch.isfinite(out).all()
    assert seen_t and all(len(s) == 2 and s[1] == 3 for s in seen_t), f"no per-frame timesteps: {seen_t}"
    pre, post = rec[1]
    assert len(pre.calls) == 2
    for a, b in zip(pre.calls, post.calls):
        check_call(a, b, 0, grid_of(lat), 0)
    assert dm.patch_embedding.weight.shape[1] == 48


def test_wan21_fun_reference_latent_prefix(pk):
    """Wan Fun 1.1 (ref_conv): the reference latent's H'*W' tokens are prepended; they must
    be left alone, and the video tokens after them steered."""
    lat = latent()
    ref = rand(1, 16, 1, 8, 8, seed=9)
    base = models.tiny_wan_variant("fun_ref")
    assert type(base.model).__name__ == "WAN21" and base.model.diffusion_model.ref_conv is not None
    in0 = Rec()   # input of block 0: [reference tokens, video tokens]
    b0 = base.clone()
    b0.set_model_patch_replace(in0, "dit", "double_block", 0)
    m, rec = patched_with_recorders(pk, b0, [("double_block", 1, 1)])
    pos, neg = conds(reference_latents=[ref], clip_vision_output=clip_vision())
    out = ce.sample(m, lat, steps=2, cfg=2.0, positive=pos, negative=neg)
    assert torch.isfinite(out).all()
    grid = grid_of(lat)
    n_ref = grid[1] * grid[2]
    # The layout this test assumes, checked on the real tensors: the first H'*W' tokens
    # of the block input are ref_conv(reference latent).
    dm = base.model.diffusion_model
    with torch.inference_mode():
        ref_tok = dm.ref_conv(base.model.process_latent_in(ref)[:, :, 0]).flatten(2).transpose(1, 2)
    first = in0.calls[0]["inp"]
    assert first.shape[1] == n_ref + grid[0] * grid[1] * grid[2]
    torch.testing.assert_close(first[:, :n_ref], ref_tok.expand(first.shape[0], -1, -1), rtol=1e-5, atol=1e-5)
    pre, post = rec[1]
    for a, b in zip(pre.calls, post.calls):
        check_call(a, b, n_ref, grid, n_ref)
        assert torch.equal(b["img"][:, :n_ref], a["img"][:, :n_ref]), "reference tokens were steered"


def test_wan21_phantom_time_concat_appended_frames(pk):
    """Phantom-style subject frames (``time_dim_concat``) are appended after the video as
    extra latent frames; newer ComfyUI counts them in its published ``grid_sizes``.  They
    are not video frames: left alone, and the boundary rows of the last real frame are
    where the video ends."""
    lat = latent(t=3)
    grid = grid_of(lat)
    subject = rand(1, 16, 1, 8, 8, seed=13)
    base = models.tiny_wan_variant("t2v")
    m, rec = patched_with_recorders(pk, base, [("double_block", 1, 1)])
    pos, neg = conds(time_dim_concat=subject)
    out = ce.sample(m, lat, steps=2, cfg=2.0, positive=pos, negative=neg)
    assert torch.isfinite(out).all()
    n_app = grid[1] * grid[2]
    pre, post = rec[1]
    assert len(pre.calls) == 2
    for a, b in zip(pre.calls, post.calls):
        check_call(a, b, 0, grid, 0, suffix=n_app)
        assert torch.equal(b["img"][:, -n_app:], a["img"][:, -n_app:]), "appended subject tokens were steered"


def test_wan22_a14b_experts_each_gated_by_own_sigmas(pk):
    """Wan 2.2 A14B: two MODELs, each patched, sampled one after the other on split steps
    (KSamplerAdvanced style).  Each expert steers exactly the calls whose sigma lies in the
    window of *its own* model_sampling: the low-noise expert's shift is set before STAS
    Model Patch, the high-noise expert's after it (a ModelSamplingSD3 node placed after
    the patch), and neither is the checkpoint's default shift of 8."""
    import comfy.model_sampling as cms
    import comfy.sample

    class Flow(cms.ModelSamplingDiscreteFlow, cms.CONST):
        pass

    def with_shift(model, shift):   # what ModelSamplingSD3 does
        ms = Flow(model.model.model_config)
        ms.set_parameters(shift=shift, multiplier=1.0)
        m = model.clone()
        m.add_object_patch("model_sampling", ms)
        return m

    high = models.tiny_wan_variant("t2v", seed=11)
    low = models.tiny_wan_variant("t2v", seed=12)
    assert type(high.model).__name__ == type(low.model).__name__ == "WAN21"
    default_ms = high.get_model_object("model_sampling")
    steps, split = 6, 3
    windows = {"high": (0.0, 0.4), "low": (0.0, 0.6)}

    h_m, h_rec = patched_with_recorders(pk, high, [("double_block", 1, 1)], start_percent=0.0,
                                        end_percent=windows["high"][1])
    h_m = with_shift(h_m, 4.0)                      # shift node after STAS
    l_m, l_rec = patched_with_recorders(pk, with_shift(low, 3.0), [("double_block", 1, 1)],
                                        start_percent=0.0, end_percent=windows["low"][1])   # shift node before STAS

    lat = latent()
    pos, neg = conds()
    noise = comfy.sample.prepare_noise(lat, 0)
    with torch.inference_mode():
        mid = comfy.sample.sample(h_m, noise, steps, 2.0, "euler", "simple", pos, neg, lat, start_step=0,
                                  last_step=split, force_full_denoise=False, disable_pbar=True, seed=0)
        out = comfy.sample.sample(l_m, torch.zeros_like(mid), steps, 2.0, "euler", "simple", pos, neg, mid,
                                  start_step=split, last_step=steps, force_full_denoise=True, disable_pbar=True,
                                  seed=0)
    assert torch.isfinite(out).all()

    all_got = []
    for model, rec, name in ((h_m, h_rec, "high"), (l_m, l_rec, "low")):
        start, end = windows[name]
        ms = model.get_model_object("model_sampling")
        # README's window rule: boundaries taken 0.0015 of denoising early; start 0 is open
        s_hi = float(ms.percent_to_sigma(start - 0.0015)) if start > 0 else float("inf")
        s_lo = float(ms.percent_to_sigma(end - 0.0015))
        pre, post = rec[1]
        assert len(pre.calls) == split, name
        sigmas = [a["sigma"] for a in pre.calls]
        got = [not torch.equal(a["img"], b["img"]) for a, b in zip(pre.calls, post.calls)]
        want = [s_lo < s <= s_hi for s in sigmas]
        assert got == want, f"{name} expert: steered {got}, its own window says {want} " \
                            f"(sigmas {sigmas}, window ({s_lo:.3f}, {s_hi:.3f}])"
        # Discriminating: the default model_sampling would gate these calls differently.
        d_lo = float(default_ms.percent_to_sigma(end - 0.0015))
        assert want != [d_lo < s <= s_hi for s in sigmas], f"{name}: test does not tell the shifts apart"
        for a, b, on in zip(pre.calls, post.calls, got):
            if on:
                check_call(a, b, 0, grid_of(lat), 0)
        all_got += got
    assert any(all_got) and not all(all_got)


# -- HunyuanVideo ------------------------------------------------------------------------

def _hunyuan_conds(ref=None, ref_on_negative=False):
    pooled = dict(pooled_output=rand(1, 768, seed=7))
    pos = ce.text_cond(seed=1, tokens=8, **pooled, **({"ref_latent": ref} if ref is not None else {}))
    neg = ce.text_cond(seed=2, tokens=8, **pooled,
                       **({"ref_latent": ref} if ref is not None and ref_on_negative else {}))
    return pos, neg


def _image_start_in_single(last_double, single0_in):
    """Where the double-stream image tokens sit in the single-stream input, found by
    matching tensors (so the test does not assume the token order of a ComfyUI version)."""
    img, txt, s = last_double["img"], last_double["txt"], single0_in["inp"]
    assert s.shape[1] == img.shape[1] + txt.shape[1]
    if torch.equal(s[:, :img.shape[1]], img) and torch.equal(s[:, img.shape[1]:], txt):
        return 0, txt.shape[1]           # image first (older ComfyUI)
    if torch.equal(s[:, :txt.shape[1]], txt) and torch.equal(s[:, txt.shape[1]:], img):
        return txt.shape[1], txt.shape[1]  # text first (newer ComfyUI, img_slice)
    raise AssertionError("single-stream input is neither [image, text] nor [text, image]")


@pytest.mark.parametrize("with_ref", [False, True], ids=["t2v", "ref_latent_positive_only"])
def test_hunyuan_video_double_and_single_blocks(pk, with_ref):
    """All 4 blocks (2 double, 2 single) steered.  Single blocks hold image and text tokens:
    image first in 0.3.64, text first (img_slice) in 0.33.0; text tokens must stay
    untouched.  With a reference latent (I2V 'custom' guidance, positive only) its tokens
    are prepended to the image tokens of that call only, and must stay untouched too."""
    base = models.tiny_hunyuan_video(depth=2, depth_single=2)
    assert type(base.model).__name__ == "HunyuanVideo"
    if not with_ref:  # two kinds of block: the error names both ranges (one kind: its message has the range)
        with pytest.raises(ValueError, match=r"block 4 does not exist; this model has 4 \(valid 0-3, or -1 for the "
                                             r"last\) \(HunyuanVideo: 0-1 double-stream blocks, 2-3 single-stream "
                                             r"blocks\)\.$"):
            stas(base, blocks="4")
    lat = latent()
    grid = grid_of(lat)
    ref = rand(1, 16, 1, 8, 8, seed=9) if with_ref else None
    refs = [("double_block", 0, 0), ("double_block", 1, 1), ("single_block", 0, 2), ("single_block", 1, 3)]
    m, rec = patched_with_recorders(pk, base, refs, apply_to="both")
    pos, neg = _hunyuan_conds(ref)
    out = ce.sample(m, lat, steps=2, cfg=2.0, positive=pos, negative=neg)
    assert torch.isfinite(out).all()

    n_calls = 4 if with_ref else 2   # cond and uncond differ in length: no batching
    for flat in range(4):
        assert len(rec[flat][0].calls) == n_calls
    n_ref = grid[1] * grid[2] if with_ref else 0
    for i in range(n_calls):
        calls = {f: (rec[f][0].calls[i], rec[f][1].calls[i]) for f in range(4)}
        prefix = n_ref if calls[0][0]["cond_or_uncond"] == [0] else 0
        for f in (0, 1):
            a, b = calls[f]
            check_call(a, b, prefix, grid, prefix, apply_to=(0, 1))
        img_start, n_txt = _image_start_in_single(calls[1][1], calls[2][0])
        if calls[2][0]["img_slice"] is not None:
            assert list(calls[2][0]["img_slice"])[0] == img_start
        for f in (2, 3):
            a, b = calls[f]
            check_call(a, b, img_start + prefix, grid, prefix + n_txt, apply_to=(0, 1))
            txt = slice(0, n_txt) if img_start else slice(a["img"].shape[1] - n_txt, None)
            assert torch.equal(b["img"][:, txt], a["img"][:, txt]), "text tokens of a single block were steered"
            if prefix:
                pre_ref = slice(img_start, img_start + prefix)
                assert torch.equal(b["img"][:, pre_ref], a["img"][:, pre_ref]), "reference tokens were steered"


# -- HunyuanVideo 1.5 (ComfyUI after 0.3.64: same HunyuanVideo class, other parameters) -----

def _require_hunyuan_video15():
    if not models.has_hunyuan_video15():
        pytest.skip(f"ComfyUI {ce.comfy_version()} has no HunyuanVideo 1.5 (no vision_in_dim in HunyuanVideoParams)")


def _hunyuan15_conds(variant, lat):
    """What HunyuanVideo15ImageToVideo / HunyuanVideo15SuperResolution and the 1.5 text encoder give:
    Qwen text (3584) on both, byT5 glyph tokens on the positive only (so cond and uncond differ in
    length and run separately); for I2V the encoded image concatenated on channels with its mask,
    for SR the low-resolution latent (66 channels), and SigLIP vision tokens for both."""
    extra = {}
    b, _, t, h, w = lat.shape
    vision = types.SimpleNamespace(last_hidden_state=rand(1, 9, 1152, seed=10))
    if variant == "i2v":
        mask = torch.ones(1, 1, t, h, w)
        mask[:, :, :1] = 0.0
        extra = dict(concat_latent_image=rand(b, 32, t, h, w, seed=8), concat_mask=mask, clip_vision_output=vision)
    elif variant == "sr":
        extra = dict(concat_latent_image=rand(b, 66, t, h, w, seed=8), noise_augmentation=0.1,
                     clip_vision_output=vision)
    extra["pooled_output"] = None   # CLIPTextEncode always sets it; 1.5's text encoder has no pooled output
    pos = ce.text_cond(seed=1, tokens=8, dim=3584, conditioning_byt5small=rand(1, 5, 1472, seed=11), **extra)
    neg = ce.text_cond(seed=2, tokens=6, dim=3584, **extra)
    return pos, neg


@pytest.mark.parametrize("single", [0, 2], ids=["real_layout_double_only", "with_single_blocks"])
@pytest.mark.parametrize("variant", ["t2v", "i2v", "sr"])
def test_hunyuan_video15_steers_exactly_the_video_tokens(pk, variant, single):
    """HunyuanVideo 1.5: patch 1 (one token per latent pixel), byT5 and vision tokens in the text
    stream, condition-type embedding, I2V image (and SR low-resolution latent) on channels.  At
    every steered block the tokens STAS changes are exactly the default mask's video tokens;
    text, byT5 and vision tokens and every other value stay bit-identical."""
    _require_hunyuan_video15()
    sr = variant == "sr"
    base = models.tiny_hunyuan_video15(depth=2, depth_single=single, in_channels=98 if sr else 65, meanflow=sr)
    assert type(base.model).__name__ == ("HunyuanVideo15_SR_Distilled" if sr else "HunyuanVideo15")
    i2v = variant != "t2v"   # vision tokens
    dm = base.model.diffusion_model
    assert list(dm.patch_size) == [1, 1, 1] and dm.vision_in is not None and dm.byt5_in is not None
    lat = torch.zeros(1, 32, 3, 6, 6)
    grid = grid_of(lat, (1, 1, 1))
    refs = [("double_block", 0, 0), ("double_block", 1, 1)] + [("single_block", i, 2 + i) for i in range(single)]
    m, rec = patched_with_recorders(pk, base, refs, apply_to="both")
    pos, neg = _hunyuan15_conds(variant, lat)
    out = ce.sample(m, lat, steps=2, cfg=2.0, positive=pos, negative=neg)
    assert torch.isfinite(out).all()
    n_txt = {0: 8 + 5 + (9 if i2v else 0), 1: 6 + (9 if i2v else 0)}   # text + byT5 + vision tokens
    for flat in range(len(refs)):
        assert len(rec[flat][0].calls) == 4, "cond and uncond differ in text length: two calls per step"
    for i in range(4):
        calls = {f: (rec[f][0].calls[i], rec[f][1].calls[i]) for f in range(len(refs))}
        passes = calls[0][0]["cond_or_uncond"]
        assert len(passes) == 1
        for f in (0, 1):
            a, b = calls[f]
            assert a["txt"].shape[1] == n_txt[passes[0]], "byT5 / vision tokens did not reach the text stream"
            check_call(a, b, 0, grid, 0, apply_to=(0, 1))
        if single:
            img_start, nt = _image_start_in_single(calls[1][1], calls[2][0])
            assert nt == n_txt[passes[0]]
            for f in range(2, 2 + single):
                a, b = calls[f]
                check_call(a, b, img_start, grid, nt, apply_to=(0, 1))


def test_hunyuan_video15_blocks_and_recorder(pk):
    """'middle' of the real 54 double blocks is 27; the block list names no empty single-stream
    group; the MA Recorder records the 1.5 layout bit for bit (|h| of the block output at every
    video token, both CFG passes) behind STAS."""
    _require_hunyuan_video15()
    fam_mod = ce.pack_module("nodes.families")
    base = models.tiny_hunyuan_video15(depth=3, depth_single=0, meanflow=True)
    dm = base.model.diffusion_model
    fam = fam_mod.family_of(dm)
    assert fam.name == "HunyuanVideo" and fam.describe_blocks(dm) == "0-2 double-stream blocks"
    assert [r.flat for r in fam_mod.select_blocks(fam, dm, "middle")] == [1]
    with pytest.raises(ValueError, match=r"block 3 does not exist; this model has 3 \(valid 0-2, or -1 for the last\)\.$"):
        stas(base, blocks="3")

    rec_node = ce.pack_module("nodes.ma_recorder").MARecorder
    steered = stas(base, blocks="1", end_percent=1.0, apply_to="both")
    lat = torch.zeros(1, 32, 3, 6, 6)
    rm, recording = rec_node.execute(model=steered, blocks="all", steps="all", record="both", channels="3,70",
                                     top_k=2, token_stride=0, max_memory_mb=64).result
    cap = {}
    m = rm.clone()
    for i in range(3):
        cap[i] = Rec(inner=rm.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", i)])
        m.set_model_patch_replace(cap[i], "dit", "double_block", i)
    pos, neg = _hunyuan15_conds("i2v", lat)
    samples = ce.sample(m, lat, steps=2, cfg=2.0, positive=pos, negative=neg)
    run = recording.runs[-1]
    assert not run.notes and run.layout.grid == (3, 6, 6)
    assert sorted(run.entries) == [(b, s, c) for b in range(3) for s in range(2) for c in (0, 1)]
    pos_idx = run.layout.positions()
    for b in range(3):
        for call in cap[b].calls:
            s = run.layout.step_of(call["sigma"])
            e = run.entries[(b, s, call["cond_or_uncond"][0])]
            want = call["img"][0][:, list(e.channels)].reshape(3, 36, -1)[:, pos_idx].abs().float()
            assert torch.equal(e.mag[0], want), f"block {b} step {s}: recorded values differ from the block output"
            assert e.has_steer == (b == 1)
    assert run.entries[(1, 0, 0)].steer_after is not None
    vis = ce.pack_module("nodes.ma_visualizer").MAVisualizer
    text = vis.execute(recording=recording, latent={"samples": samples}, block=1, step=0, sample=0, chunk="cond",
                       channel="max", threshold=50.0, log_scale=False, export=False, filename_prefix="x",
                       mask=None).result[4]
    assert "HunyuanVideo" in text and "STAS steering here: channels [3, 70]" in text


# -- CogVideoX (ComfyUI 0.2x+; no block-replace hook: object patch on blocks.i.forward) --

def _require_cogvideox():
    try:
        import comfy.ldm.cogvideo.model  # noqa: F401
    except ImportError:
        pytest.skip(f"ComfyUI {ce.comfy_version()} has no native CogVideoX (comfy.ldm.cogvideo)")


@pytest.mark.parametrize("v15", [False, True], ids=["cogvideox_1.0", "cogvideox_1.5_temporal_patch"])
def test_cogvideox_object_patch(pk, v15):
    ce.require_comfy()
    _require_cogvideox()
    base = models.tiny_cogvideox(num_layers=3, v15=v15)
    assert type(base.model).__name__ == "CogVideoX"
    m, pre, post = object_patched_with_recorders(pk, base, "blocks", base.model.diffusion_model.blocks)
    lat = latent(t=3)
    unpatched = ce.sample(base, lat, steps=2, cfg=2.0)
    out = ce.sample(m, lat, steps=2, cfg=2.0)
    assert torch.isfinite(out).all()
    grid = grid_of(lat, (2, 2, 2) if v15 else (1, 2, 2))
    assert len(pre.calls) == 2
    for a, b in zip(pre.calls, post.calls):
        check_call(a, b, 0, grid, 0)
    assert not torch.equal(out, unpatched)
    # The object patches live on the clones only: the user's MODEL samples unpatched again.
    assert torch.equal(ce.sample(base, lat, steps=2, cfg=2.0), unpatched)


# -- anything else ----------------------------------------------------------------------

@pytest.mark.parametrize("build,label", [
    (lambda: models.tiny_sd3(), "SD3"),
    (lambda: models.tiny_hunyuan_image21(), "HunyuanImage21"),
    (lambda: models.tiny_hunyuan_image21(refiner=True), "HunyuanImage21Refiner"),
], ids=["sd3_image_dit", "hunyuan_image21_in_hunyuan_video_class", "hunyuan_image21_refiner"])
def test_unsupported_model_is_refused_at_node_execution(pk, build, label):
    model = build()
    assert type(model.model).__name__ == label
    with pytest.raises(ValueError) as ei:
        stas(model, blocks="middle")
    msg = str(ei.value)
    if label.startswith("HunyuanImage"):
        assert type(model.model.diffusion_model).__name__ == "HunyuanVideo"
        assert msg.startswith("STAS Model Patch: STAS does not support HunyuanImage 2.1 models"), msg
    for fam in ("Wan", "HunyuanVideo", "CogVideoX"):
        assert fam in msg, f"the error does not name {fam}: {msg}"
