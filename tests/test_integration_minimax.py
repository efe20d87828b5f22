"""MiniMax H3 (ComfyUI 0.33.0: ``comfy/ldm/minimax/model.py``, ``comfy_extras/nodes_minimax_h3.py``) on a tiny
random-weight ``MiniMaxH3Model`` loaded through ``comfy.sd.load_diffusion_model_state_dict`` (ComfyUI's detection
picks ``model_base.MiniMaxH3``), with the latent of ComfyUI's own ``EmptyMiniMaxH3LatentAV`` and guides of its own
``MiniMaxH3AddGuide`` (stand-in VAEs give the guide latents their real shapes), sampled with CFG by comfy.sample.

The layout each test assumes is worked out here from the model's code, not from the pack: a block gets and returns
one packed sequence [S, hidden] (no batch dimension) in the order text | guide rows (video rows of each image guide,
then its audio rows) | generated audio (2 rows per audio latent frame) | generated video (last, (t, h, w), patch
1x2x2). The model runs batch 1: cond and uncond are separate calls, of different lengths (only the positive prompt
carries the guides, and the prompts differ in length here).

At every steered block call the output leaving STAS equals the formula over the video segment alone (alpha * M *
sign at the default mask's tokens, M over the video tokens), everything else bit-identical; a test-only patch plants
1e4 in every token before the video (text, guides, audio) and none of it reaches what STAS writes. On ComfyUI
versions without MiniMax H3 (0.3.64, 0.8.0) every test is a skip that says so.
"""
from __future__ import annotations

import functools

import pytest
import torch

from stas_harness import comfy_env as ce, models
from test_integration_families import ALPHA, CH_TEXT, CHANNELS, _clone, _Shared, check_call, default_tokens

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

stas = functools.partial(ce.stas, channels=CH_TEXT, alpha=ALPHA, end_percent=1.0, apply_to="both")
PLANT = 1.0e4
TEXT_DIM = 64
# EmptyMiniMaxH3LatentAV(width=128, height=96, length=22): video [1, 24, 7, 6, 8] -> grid (7, 3, 4); 22 frames at
# 24 fps -> round(22 / 24 * 40) = 37 audio latent frames -> 74 audio rows.
WIDTH, HEIGHT, LENGTH = 128, 96, 22
GRID = (7, 3, 4)
AUDIO_ROWS = 2 * 37
POS_TEXT, NEG_TEXT = 8, 5
GUIDE_AUDIO_T = 6                               # the stand-in audio VAE's latent frames for the guide's audio


def require_minimax():
    ce.require_comfy()
    import importlib.util
    if importlib.util.find_spec("comfy.ldm.minimax") is None:
        pytest.skip(f"ComfyUI {ce.comfy_version()} has no MiniMax H3 (comfy.ldm.minimax; ComfyUI 0.33.0 has it)")
    ce.ensure_extra_node("EmptyMiniMaxH3LatentAV", "nodes_minimax_h3.py")


def tiny_minimax(num_layers: int = 3, seed: int = 0):
    """A tiny random-weight MiniMaxH3Model (hidden 128, one 128-wide head: the rope rotates 96 of its dims) loaded
    through ComfyUI's loader."""
    require_minimax()
    import comfy.ldm.minimax.model as mm
    import comfy.ops
    dm = mm.MiniMaxH3Model(hidden_size=128, num_layers=num_layers, token_refiner_num_layers=1, num_attention_heads=1,
                           attention_head_dim=128, ffn_hidden_size=256, text_dim=TEXT_DIM, timestep_input_dim=64,
                           time_embed_hidden_size=64, time_embed_dim=64, operations=comfy.ops.manual_cast)
    m = models.load_random(dm, seed=seed)
    assert type(m.model).__name__ == "MiniMaxH3", type(m.model).__name__
    assert type(m.model.diffusion_model).__name__ == "MiniMaxH3Model"
    return m


class GuideVAE:
    """Stand-in video VAE for MiniMaxH3AddGuide: pixels [N, H, W, 3] -> a latent of the real shape [1, 24, 1, H/16,
    W/16] (one image)."""

    def encode(self, pixels):
        g = torch.Generator().manual_seed(int(pixels.float().sum().item() * 1000) % (2 ** 31))
        return torch.randn(1, 24, 1, pixels.shape[1] // 16, pixels.shape[2] // 16, generator=g)


class GuideAudioVAE:
    """Stand-in audio VAE: a waveform [1, samples, channels] -> [1, 32, 2, GUIDE_AUDIO_T]."""

    audio_sample_rate = 32000

    def encode(self, waveform):
        return torch.randn(1, 32, 2, GUIDE_AUDIO_T, generator=torch.Generator().manual_seed(11))


def node(name):
    import nodes
    return nodes.NODE_CLASS_MAPPINGS[name]


def av_latent():
    lat = node("EmptyMiniMaxH3LatentAV").execute(width=WIDTH, height=HEIGHT, length=LENGTH).result[0]
    assert [tuple(t.shape) for t in lat["samples"].unbind()] == [(1, 24, 7, 6, 8), (1, 32, 2, 37)]
    return lat


def guided_conds(lat):
    """positive: text (8 tokens), an image guide at frame 0, an image + audio guide at frame 10; negative: text
    (5 tokens), no guide. Returns (positive, negative, tokens before the video in each)."""
    g = torch.Generator().manual_seed(4)
    pos = ce.text_cond(tokens=POS_TEXT, seed=1, dim=TEXT_DIM)
    neg = ce.text_cond(tokens=NEG_TEXT, seed=2, dim=TEXT_DIM)
    add = node("MiniMaxH3AddGuide")
    img = torch.rand(1, HEIGHT, WIDTH, 3, generator=g)
    pos = add.execute(positive=pos, latent=lat, frame_idx=0, vae=GuideVAE(), image=img).result[0]
    audio = {"waveform": torch.rand(1, 2, 6400, generator=g), "sample_rate": 32000}
    pos = add.execute(positive=pos, latent=lat, frame_idx=10, vae=GuideVAE(), audio_vae=GuideAudioVAE(),
                      image=torch.rand(1, HEIGHT, WIDTH, 3, generator=g), audio=audio).result[0]
    frame = GRID[1] * GRID[2]
    # text | guide 1 video rows | guide 2 video rows | guide 2 audio rows | audio | video
    pos_prefix = POS_TEXT + frame + frame + 2 * GUIDE_AUDIO_T + AUDIO_ROWS
    neg_prefix = NEG_TEXT + AUDIO_ROWS
    return pos, neg, {0: pos_prefix, 1: neg_prefix}


class Rec(_Shared):
    """A patches_replace["dit"] patch that runs its inner (the block, or STAS) and records its output as [1, S, C]
    (what check_call reads); with ``plant``, it first edits the block's output (what STAS then receives):
    ``plant(h, c)`` for a callable taking the output [S, C] and the call's pass, else PLANT into the steered channels
    of the ``plant(c)`` tokens."""

    def __init__(self, inner=None, plant=None):
        self.inner, self.plant, self.calls = inner, plant, []

    def __call__(self, args, extra):
        inp = _clone(args["img"])
        out = self.inner(args, extra) if self.inner is not None else extra["original_block"](args)
        to = args.get("transformer_options") or {}
        cou = list(to.get("cond_or_uncond") or [])
        assert out["img"].dim() == 2, "a MiniMax H3 block output is [S, hidden]"
        if self.plant is not None:
            if getattr(self.plant, "edits", False):
                self.plant(out["img"], cou[0])
            else:
                idx = torch.as_tensor(self.plant(cou[0]))
                out["img"][idx[:, None], torch.tensor(CHANNELS)[None, :]] = PLANT
        self.calls.append(dict(inp=inp, img=_clone(out["img"]).unsqueeze(0), cond_or_uncond=cou,
                               sigma=float(to["sigmas"].reshape(-1)[0])))
        return out


def with_recorders(pk, base, block=1, plant=None, **stas_kw):
    """base -> pre Rec (planting) -> STAS on ``block`` -> post Rec; (model, pre, post)."""
    m0 = base.clone()
    pre = Rec(plant=plant)
    m0.set_model_patch_replace(pre, "dit", "double_block", block)
    patched = stas(m0, blocks=str(block), **stas_kw)
    dit = patched.model_options["transformer_options"]["patches_replace"]["dit"]
    mine = dit[("double_block", block)]
    assert isinstance(mine, pk.hooks.BlockReplacePatch) and mine.inner is pre
    assert set(dit) == {("double_block", block)}, "a block that edits in place needs no pass-through patches"
    m = patched.clone()
    post = Rec(inner=mine)
    m.set_model_patch_replace(post, "dit", "double_block", block)
    return m, pre, post


def sample(m, lat, pos, neg, steps=2, **kw):
    out = ce.sample(m, lat["samples"], steps=steps, cfg=2.0, positive=pos, negative=neg, **kw)
    assert out.is_nested and all(torch.isfinite(t).all() for t in out.unbind())
    return out


# -- the family ------------------------------------------------------------------------------------------------

def test_minimax_h3_is_a_supported_family(pk):
    base = tiny_minimax()
    fam_mod = pk.module("nodes.families")
    dm = base.model.diffusion_model
    fam = fam_mod.family_of(dm)
    assert fam.name == "MiniMax H3" and fam.describe_blocks(dm) == "0-2 blocks"
    assert fam.hidden_size(dm) == 128 and fam.patch_size(dm) == (1, 2, 2)
    assert not fam.loop_keeps_output
    assert "MiniMax H3" in fam_mod.SUPPORTED and "MiniMaxH3Model" not in fam_mod.REFUSED


# -- exact steering of the video segment, cond and uncond of different lengths ----------------------------------

def test_steers_exactly_the_video_segment_and_no_guide_audio_or_text_token(pk):
    base = tiny_minimax()
    lat = av_latent()
    pos, neg, prefix = guided_conds(lat)
    m, pre, post = with_recorders(pk, base, plant=lambda c: list(range(prefix[c])))
    sample(m, lat, pos, neg)
    n = GRID[0] * GRID[1] * GRID[2]
    assert len(pre.calls) == 4 == len(post.calls)
    lengths = {c["cond_or_uncond"][0]: c["img"].shape[1] for c in pre.calls}
    assert lengths == {0: prefix[0] + n, 1: prefix[1] + n}, f"cond and uncond: not calls of their own lengths {lengths}"
    # the model's own layout agrees with the one worked out above
    import comfy.ldm.minimax.model as mm
    for c, cond in ((0, pos), (1, neg)):
        kf = cond[0][1].get("minimax_keyframes")
        lay = mm.PackedLayout(cond[0][0].shape[1], GRID[0], 6, 8, 37, keyframes=kf)
        assert lay.segments[-1] == (prefix[c], prefix[c] + n, "video"), lay.segments
    for a, b in zip(pre.calls, post.calls):
        c = a["cond_or_uncond"][0]
        assert a["img"].shape[0] == 1 and len(a["cond_or_uncond"]) == 1, "MiniMax H3 runs batch 1"
        check_call(a, b, prefix[c], GRID, prefix[c], apply_to=(0, 1))
        assert (a["img"][0, :prefix[c]][:, list(CHANNELS)] == PLANT).all(), "nothing planted"
        assert torch.equal(b["img"][0, :prefix[c]], a["img"][0, :prefix[c]]), "a text, guide or audio token changed"
        vis = b["img"][0, prefix[c]:][:, list(CHANNELS)].float()
        assert vis.abs().max() < PLANT / 10, "a planted value reached what STAS wrote into the video tokens"


def test_default_apply_to_steers_only_the_positive_prompts_calls(pk):
    base = tiny_minimax()
    lat = av_latent()
    pos, neg, prefix = guided_conds(lat)
    m, pre, post = with_recorders(pk, base, apply_to="cond")
    sample(m, lat, pos, neg)
    assert sorted(a["cond_or_uncond"][0] for a in pre.calls) == [0, 0, 1, 1]
    for a, b in zip(pre.calls, post.calls):
        c = a["cond_or_uncond"][0]
        if c == 1:
            assert torch.equal(a["img"], b["img"]), "the negative prompt's call was steered"
        else:
            check_call(a, b, prefix[c], GRID, prefix[c], apply_to=(0,))


def test_auto_channels_are_detected_on_the_video_segment_alone(pk):
    """A massive channel (5) planted in the video tokens is found and steered; a far larger one (9) planted in
    every text, guide and audio token is neither detected nor touched."""
    base = tiny_minimax()
    lat = av_latent()
    pos, neg, prefix = guided_conds(lat)
    n = GRID[0] * GRID[1] * GRID[2]

    def massive(h, c):
        p = prefix[c]
        h[p + n // 2, 5] = 500.0                        # an interior video token
        h[:p, 9] = PLANT
    massive.edits = True

    m, pre, post = with_recorders(pk, base, plant=massive, channels="auto")
    sample(m, lat, pos, neg)
    tok = default_tokens(GRID)
    for a, b in zip(pre.calls, post.calls):
        p = prefix[a["cond_or_uncond"][0]]
        diff = (a["img"][0] != b["img"][0]).nonzero()
        assert len(diff), "auto channels steered nothing"
        assert set(diff[:, 1].tolist()) == {5}, f"channels {sorted(set(diff[:, 1].tolist()))} were steered, not [5]"
        assert set(diff[:, 0].tolist()) <= set((tok + p).tolist()), "a token outside the video mask changed"
        m_ref = a["img"][0, p:, 5].abs().max() * ALPHA
        assert torch.equal(b["img"][0, p + tok, 5].abs(), m_ref.expand(len(tok))), "steered values are not alpha * M"


def test_t2va_without_guides_and_the_model_left_unpatched(pk):
    base = tiny_minimax()
    lat = av_latent()
    pos = ce.text_cond(tokens=POS_TEXT, seed=1, dim=TEXT_DIM)
    neg = ce.text_cond(tokens=NEG_TEXT, seed=2, dim=TEXT_DIM)
    before = sample(base, lat, pos, neg)
    m, pre, post = with_recorders(pk, base)
    steered = sample(m, lat, pos, neg)
    for a, b in zip(pre.calls, post.calls):
        p = (POS_TEXT, NEG_TEXT)[a["cond_or_uncond"][0]] + AUDIO_ROWS
        check_call(a, b, p, GRID, p, apply_to=(0, 1))
    assert not torch.equal(steered.unbind()[0], before.unbind()[0])
    assert "patches_replace" not in base.model_options.get("transformer_options", {})
    after = sample(base, lat, pos, neg)
    assert all(torch.equal(x, y) for x, y in zip(after.unbind(), before.unbind())), "the user's model changed"


# -- MA Recorder -------------------------------------------------------------------------------------------------

def test_recorder_records_the_video_segment(pk):
    base = tiny_minimax()
    lat = av_latent()
    pos, neg, prefix = guided_conds(lat)
    rec_node = ce.pack_module("nodes.ma_recorder").MARecorder
    steered = stas(base, blocks="1")
    rm, recording = rec_node.execute(model=steered, blocks="all", steps="all", record="both", channels="3,70",
                                     top_k=2, token_stride=0, max_memory_mb=64).result
    cap = {}
    m = rm.clone()
    dit = rm.model_options["transformer_options"]["patches_replace"]["dit"]
    for i in range(3):
        cap[i] = Rec(inner=dit[("double_block", i)])
        m.set_model_patch_replace(cap[i], "dit", "double_block", i)
    samples = sample(m, lat, pos, neg)
    run = recording.runs[-1]
    assert not run.notes, run.notes
    assert run.layout.family == "MiniMax H3" and run.layout.grid == GRID, (run.layout.family, run.layout.grid)
    assert sorted(run.entries) == [(b, s, c) for b in range(3) for s in range(2) for c in (0, 1)]
    pos_idx = run.layout.positions()
    frame = GRID[1] * GRID[2]
    for b in range(3):
        assert len(cap[b].calls) == 4
        for call in cap[b].calls:
            c = call["cond_or_uncond"][0]
            e = run.entries[(b, run.layout.step_of(call["sigma"]), c)]
            video = call["img"][0, prefix[c]:]
            want = video[:, list(e.channels)].reshape(GRID[0], frame, -1)[:, pos_idx].abs().float()
            assert torch.equal(e.mag[0], want), f"block {b}: recorded values are not the video segment's"
            assert e.has_steer == (b == 1)
    vis = ce.pack_module("nodes.ma_visualizer").MAVisualizer
    text = vis.execute(recording=recording, latent={"samples": samples}, block=1, step=0, sample=0, chunk="cond",
                       channel="max", threshold=50.0, log_scale=False, export=False, filename_prefix="x",
                       mask=None).result[4]
    assert "MiniMax H3" in text and "STAS steering here: channels [3, 70]" in text, text


# -- ref2va: reference rows between the text and the audio ------------------------------------------------------

class RefCLIP:
    """Stand-in for the MiniMax H3 text encoder as MiniMaxH3ReferenceToVideo calls it: [1, tokens, TEXT_DIM]."""

    def tokenize(self, text, **kwargs):
        return {"text": text}

    def encode_from_tokens_scheduled(self, tokens, **kwargs):
        return ce.text_cond(tokens=POS_TEXT, seed=1, dim=TEXT_DIM)


def test_ref2va_reference_rows_neither_steered_nor_in_m(pk):
    base = tiny_minimax()
    ref = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(3))   # 'match': kept at 64x64 -> 4x4 latent
    pos, lat = node("MiniMaxH3ReferenceToVideo").execute(
        clip=RefCLIP(), vae=GuideVAE(), audio_vae=GuideAudioVAE(), prompt="<Picture 1> walks", width=WIDTH,
        height=HEIGHT, length=LENGTH, ref_image_size="match", ref_images={"ref_image_1": ref}).result
    assert [r["kind"] for r in pos[0][1]["minimax_refs"]] == ["image"]
    neg = ce.text_cond(tokens=NEG_TEXT, seed=2, dim=TEXT_DIM)
    prefix = {0: POS_TEXT + (4 // 2) * (4 // 2) + AUDIO_ROWS, 1: NEG_TEXT + AUDIO_ROWS}   # text | reference | audio
    m, pre, post = with_recorders(pk, base, plant=lambda c: list(range(prefix[c])))
    sample(m, lat, pos, neg)
    assert {a["cond_or_uncond"][0] for a in pre.calls} == {0, 1}
    for a, b in zip(pre.calls, post.calls):
        c = a["cond_or_uncond"][0]
        check_call(a, b, prefix[c], GRID, prefix[c], apply_to=(0, 1))
        assert torch.equal(b["img"][0, :prefix[c]], a["img"][0, :prefix[c]]), "a text, reference or audio token changed"


def test_mask_preview_of_a_minimax_latent(pk):
    """Boundary Mask Builder takes the (video, audio) NestedTensor of EmptyMiniMaxH3LatentAV and previews its video."""
    require_minimax()
    lat = av_latent()
    video = lat["samples"].unbind()[0]
    _, prev_av = ce.run_node(pk.mask, latent=lat, patch_hw=2)[:2]
    _, prev_v = ce.run_node(pk.mask, latent={"samples": video}, patch_hw=2)[:2]
    assert torch.equal(prev_av, prev_v) and prev_av.abs().sum() > 0


def test_video_start_of_a_call_of_another_shape(pk):
    """A call whose latent differs from the run's packed layout (the forward then builds its own) gets its video
    start from a layout rebuilt the same way: same text and guides, this call's video and audio lengths."""
    base = tiny_minimax()
    lat = av_latent()
    pos, _, prefix = guided_conds(lat)
    import comfy.ldm.minimax.model as mm
    kf = pos[0][1]["minimax_keyframes"]
    payload = {"layout": mm.PackedLayout(POS_TEXT, GRID[0], 6, 8, 37, keyframes=kf), "keyframes": kf}
    dm = base.model.diffusion_model
    fam = pk.module("nodes.families").family_of(dm)
    same = {"minimax_payload": payload, "latent_shapes": [(1, 24, 7, 6, 8), (1, 32, 2, 37)]}
    assert fam.video_prefix(dm, same, GRID) == prefix[0]
    other = {"minimax_payload": payload, "latent_shapes": [(1, 24, 2, 6, 8), (1, 32, 2, 10)]}
    assert fam.video_prefix(dm, other, (2, 3, 4)) == POS_TEXT + 12 + 12 + 2 * GUIDE_AUDIO_T + 2 * 10
    with pytest.raises(RuntimeError, match="no packed layout"):
        fam.video_prefix(dm, {"latent_shapes": same["latent_shapes"]}, GRID)
