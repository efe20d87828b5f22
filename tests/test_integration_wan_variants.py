"""Wan-derived models of ComfyUI (issue 29) on tiny random-weight models of ComfyUI's own classes, loaded through
``comfy.sd.load_diffusion_model_state_dict`` so ComfyUI's detection picks the model_base class (checked by name),
conditioned with the keys ComfyUI's own nodes put in the conditioning (WanSoundImageToVideo, WanHuMoImageToVideo,
WanAnimateToVideo, the SCAIL nodes), sampled with CFG (cond and uncond batched where the model allows).

At every steered block call the output that leaves STAS is checked against the output that entered it, as in
test_integration_families.py (``check_call``): steered = the default mask's tokens of the *generated video*, values
alpha * M * sign, everything else bit-identical. The layout each test assumes (which tokens are the video, what sits
before and after it) is worked out here from the model's code (docs/models.md), not from the pack.

Conditioning never enters M: a test-only patch plants an extreme value (1e4) in the conditioning tokens (reference
frame, reference and motion-frame tokens, pose tokens) of the block output before STAS sees it; the values STAS
writes still follow the formula over the video tokens alone, and the planted tokens leave STAS bit-identical.

Wan 2.2 Animate (1 and 2) and S2V are also conditioned by ComfyUI's own WanAnimateToVideo, WanAnimate2ToVideo and
WanSoundImageToVideo nodes (stand-in VAE from tests/comfy_test_nodes), and checked the same way.

Also: autoregressive Wan (CausalWanModel), SeedVR2 and Cosmos are refused at the node with a message naming the
class, the reason and what to use instead.
"""
from __future__ import annotations

import functools
import json
import types

import pytest
import torch

from stas_harness import comfy_env as ce, models
from test_integration_families import ALPHA, CH_TEXT, CHANNELS, Rec, check_call
from test_integration_new_families import rand

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

stas = functools.partial(ce.stas, channels=CH_TEXT, alpha=ALPHA, end_percent=1.0, apply_to="both")
PLANT = 1.0e4


def require_class(module: str, cls: str):
    ce.require_comfy()
    import importlib
    try:
        mod = importlib.import_module(module)
    except ImportError:
        mod = None
    if mod is None or not hasattr(mod, cls):
        pytest.skip(f"ComfyUI {ce.comfy_version()} has no {cls} ({module})")
    return getattr(mod, cls)


def tiny(cls_name, model_base, module="comfy.ldm.wan.model", model_type=None, num_layers=2, **kw):
    """A tiny random-weight ``cls_name`` loaded through ComfyUI's loader; its model_base class must be ``model_base``
    (``model_type``: the ``config`` metadata a checkpoint of a class without detection keys carries)."""
    require_class(module, cls_name)
    import importlib
    import comfy.ops
    cls = getattr(importlib.import_module(module), cls_name)
    kw.setdefault("in_dim", 16)
    kw.setdefault("out_dim", 16)
    dm = cls(dim=128, ffn_dim=256, num_heads=1, num_layers=num_layers, text_dim=4096, freq_dim=256,
             operations=comfy.ops.manual_cast, **kw)
    meta = {"config": json.dumps({"transformer": {"model_type": model_type}})} if model_type else None
    m = models.load_random(dm, **({"metadata": meta} if meta else {}))
    assert type(m.model).__name__ == model_base, f"ComfyUI detected {type(m.model).__name__}, not {model_base}"
    assert type(m.model.diffusion_model).__name__ == cls_name
    return m


class Planter(Rec):
    """Runs the block, then writes PLANT into the channels STAS steers at ``cond_tokens(n_tokens)`` of its output
    (conditioning tokens), and records that (the output STAS receives)."""

    def __init__(self, cond_tokens):
        super().__init__(inner=self._run)
        self.cond_tokens = cond_tokens

    def _run(self, args, extra):
        out = extra["original_block"](args)
        img = out["img"]
        idx = self.cond_tokens(img.shape[1])
        if len(idx):
            img[:, torch.as_tensor(idx)[:, None], torch.tensor(CHANNELS)[None, :]] = PLANT
        return out


def run_checked(pk, base, lat, pos, neg, prefix, suffix, grid, block=1, cond_tokens=None, batched=True):
    """STAS on ``block`` between a recording (planting) pre patch and a recording post patch; sample with CFG; check
    every call: video tokens from ``prefix``, ``suffix`` tokens after them, the grid ``grid``."""
    m0 = base.clone()
    pre = Planter(cond_tokens) if cond_tokens is not None else Rec()
    m0.set_model_patch_replace(pre, "dit", "double_block", block)
    patched = stas(m0, blocks=str(block))
    stas_patch = patched.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", block)]
    assert isinstance(stas_patch, pk.hooks.BlockReplacePatch) and stas_patch.inner is pre
    m = patched.clone()
    post = Rec(inner=stas_patch)
    m.set_model_patch_replace(post, "dit", "double_block", block)
    out = ce.sample(m, lat, steps=2, cfg=2.0, positive=pos, negative=neg)
    assert torch.isfinite(out).all()
    assert pre.calls and len(pre.calls) == len(post.calls)
    if batched:
        assert all(c["img"].shape[0] == 2 for c in pre.calls), "cond and uncond did not run batched"
    n = grid[0] * grid[1] * grid[2]
    for a, b in zip(pre.calls, post.calls):
        check_call(a, b, prefix, grid, prefix, apply_to=(0, 1), suffix=suffix)
        if cond_tokens is not None:
            idx = torch.as_tensor(cond_tokens(a["img"].shape[1]))
            assert len(idx) and (a["img"][:, idx][:, :, list(CHANNELS)] == PLANT).all(), "nothing planted"
            assert torch.equal(b["img"][:, idx], a["img"][:, idx]), "conditioning tokens were changed"
            vis = b["img"][:, prefix:prefix + n][:, :, list(CHANNELS)].float()
            assert vis.abs().max() < PLANT / 10, "a planted conditioning value reached the steered video tokens"
    return pre, post


def tokens(lo, hi):
    return list(range(lo, hi))


# -- Wan 2.2 S2V: reference and motion-frame tokens after the video; audio added after the block -------------------

def s2v():
    base = tiny("WanModel_S2V", "WAN22_S2V")
    import inspect
    if '"pe": freqs, "transformer_options"' not in inspect.getsource(type(base.model.diffusion_model).forward_orig):
        # ComfyUI 0.3.64: S2V's block patches get no transformer_options; STAS refuses the model there.
        with pytest.raises(ValueError, match=r"^STAS Model Patch: STAS does not support Wan 2\.2 S2V models in this "
                                             r"ComfyUI version .*update ComfyUI"):
            stas(base, blocks="1")
        pytest.skip(f"ComfyUI {ce.comfy_version()}: S2V's blocks get no transformer_options; refused (checked)")
    return base


def test_wan22_s2v_reference_and_motion_tokens_untouched(pk):
    base = s2v()
    dm = base.model.diffusion_model
    lat = ce.latent(t=3, h=16, w=16)
    grid = (3, 8, 8)
    hw = grid[1] * grid[2]
    ref = rand(1, 16, 1, 16, 16, seed=7)
    motion = rand(1, 16, 19, 16, 16, seed=8)          # WanSoundImageToVideo keeps the last 19 motion latent frames
    audio = rand(1, 25, 1024, 3 * 4, seed=9)          # audio_embed: [B, layers, 1024, 4 per latent frame]
    with torch.inference_mode():
        n_motion = dm.frame_packer(base.model.process_latent_in(motion), dm)[0].shape[1]
    common = dict(reference_latents=[ref], reference_motion=motion)
    pos = ce.text_cond(seed=1, audio_embed=audio, **common)
    neg = ce.text_cond(seed=2, audio_embed=audio * 0.0, **common)
    suffix = hw + n_motion
    run_checked(pk, base, lat, pos, neg, 0, suffix, grid,
                cond_tokens=lambda n: tokens(n - suffix, n))


def test_wan22_s2v_audio_only(pk):
    base = s2v()
    lat = ce.latent(t=3)
    audio = rand(1, 25, 1024, 3 * 4, seed=9)
    run_checked(pk, base, lat, ce.text_cond(seed=1, audio_embed=audio), ce.text_cond(seed=2, audio_embed=audio * 0),
                0, 0, (3, 4, 4))


# -- HuMo: reference tokens after the video -------------------------------------------------------------------------

def test_humo_reference_tokens_untouched(pk):
    base = tiny("HumoWanModel", "WAN21_HuMo")
    lat = ce.latent(t=3)
    ref = rand(1, 16, 1, 8, 8, seed=7)
    pos = ce.text_cond(seed=1, reference_latents=[ref])
    neg = ce.text_cond(seed=2, reference_latents=[ref])
    run_checked(pk, base, lat, pos, neg, 0, 16, (3, 4, 4), cond_tokens=lambda n: tokens(n - 16, n))


# -- SCAIL / SCAIL-2: reference frames before the video, pose tokens after it ---------------------------------------

@pytest.mark.parametrize("cls_name,model_base", [("SCAILWanModel", "WAN21_SCAIL"),
                                                 ("SCAIL2WanModel", "WAN21_SCAIL2")], ids=["scail", "scail2"])
def test_scail_reference_frames_and_pose_tokens_untouched(pk, cls_name, model_base):
    base = tiny(cls_name, model_base, in_dim=20)
    lat = ce.latent(t=3)
    ref = rand(1, 16, 1, 8, 8, seed=7)
    pose = rand(1, 16, 3, 8, 8, seed=8)
    clip = types.SimpleNamespace(penultimate_hidden_states=rand(1, 257, 1280, seed=3))
    extra = dict(reference_latents=[ref], pose_video_latent=pose, clip_vision_output=clip)
    pos, neg = ce.text_cond(seed=1, **extra), ce.text_cond(seed=2, **extra)
    n_ref, n_pose = 16, 3 * 16
    run_checked(pk, base, lat, pos, neg, n_ref, n_pose, (3, 4, 4),
                cond_tokens=lambda n: tokens(0, n_ref) + tokens(n - n_pose, n))


# -- WanDancer: plain video tokens (music added after the block) ----------------------------------------------------

def test_wandancer_video_tokens(pk):
    require_class("comfy.ldm.wan.model_wandancer", "WanDancerModel")
    base = tiny("WanDancerModel", "WAN22_WanDancer", module="comfy.ldm.wan.model_wandancer", in_dim=36)
    lat = ce.latent(t=3)
    pos, neg = _animate_conds(3, pose=False)
    run_checked(pk, base, lat, pos, neg, 0, 0, (3, 4, 4))


# -- FlowRVS: a plain WanModel (video segmentation) -----------------------------------------------------------------

def test_flowrvs_is_a_wan_model(pk):
    require_class("comfy.model_base", "WAN21_FlowRVS")
    base = tiny("WanModel", "WAN21_FlowRVS", model_type="flow_rvs")
    run_checked(pk, base, ce.latent(t=3), ce.text_cond(seed=1), ce.text_cond(seed=2), 0, 0, (3, 4, 4))


# -- Wan 2.2 Animate: latent frame 0 is the reference image, the video is frames 1.. -------------------------------

def _animate_conds(t, h=8, w=8, pose=True, **more):
    concat = rand(1, 16, t, h, w, seed=6)
    mask = torch.ones(1, 4, t, h, w)
    mask[:, :, :1] = 0.0                                  # the reference frame is given
    clip = types.SimpleNamespace(penultimate_hidden_states=rand(1, 257, 1280, seed=3))
    extra = dict(concat_latent_image=concat, concat_mask=mask, clip_vision_output=clip,
                 **({"pose_video_latent": rand(1, 16, t - 1, h, w, seed=8)} if pose else {}), **more)
    return ce.text_cond(seed=1, **extra), ce.text_cond(seed=2, **extra)


@pytest.mark.parametrize("cls_name,module,model_base,model_type", [
    ("AnimateWanModel", "comfy.ldm.wan.model_animate", "WAN22_Animate", None),
    ("WanAnimate2Model", "comfy.ldm.wan.model_animate2", "WAN_Animate2", "animate2"),
], ids=["animate", "animate2"])
def test_wan22_animate_reference_frame_neither_steered_nor_in_m(pk, cls_name, module, model_base, model_type):
    base = tiny(cls_name, model_base, module=module, model_type=model_type, in_dim=36,
                num_layers=5 if model_type is None else 2)
    lat = ce.latent(t=4)                                   # WanAnimateToVideo: reference frame + 3 video frames
    pos, neg = _animate_conds(4)
    hw = 16
    run_checked(pk, base, lat, pos, neg, hw, 0, (3, 4, 4), cond_tokens=lambda n: tokens(0, hw))


def test_wan22_animate_recorder_leaves_the_reference_frame_out(pk):
    require_class("comfy.ldm.wan.model_animate", "AnimateWanModel")
    base = tiny("AnimateWanModel", "WAN22_Animate", module="comfy.ldm.wan.model_animate", in_dim=36, num_layers=5)
    rec_node = ce.pack_module("nodes.ma_recorder").MARecorder
    rm, recording = rec_node.execute(model=stas(base, blocks="1"), blocks="1", steps="all", record="cond",
                                     channels="3,70", top_k=2, token_stride=0, max_memory_mb=64).result
    pos, neg = _animate_conds(4)
    ce.sample(rm, ce.latent(t=4), steps=2, cfg=2.0, positive=pos, negative=neg)
    run = recording.runs[-1]
    assert run.layout.grid == (3, 4, 4), run.layout.grid   # the generated video's 3 frames, not the reference


# -- through ComfyUI's own conditioning nodes (WanAnimateToVideo, WanAnimate2ToVideo, WanSoundImageToVideo) ------------

def wan_node(name):
    """ComfyUI's own node ``name`` of comfy_extras/nodes_wan.py (a skip where this ComfyUI has none)."""
    import nodes
    if name not in nodes.NODE_CLASS_MAPPINGS:
        ce.ensure_extra_node("WanImageToVideo", "nodes_wan.py")
    if name not in nodes.NODE_CLASS_MAPPINGS:
        pytest.skip(f"ComfyUI {ce.comfy_version()} has no {name} node")
    return nodes.NODE_CLASS_MAPPINGS[name]


def wan_vae():
    """The test stand-in Wan 2.1 VAE (tests/comfy_test_nodes: 16 channels, 8x spatial, 4x temporal, no weights)."""
    ce.ensure_test_nodes()
    import nodes
    return nodes.NODE_CLASS_MAPPINGS["STASTestVAE"]().load("wan2.1")[0]


def frames(n, h=64, w=64, seed=0):
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("continue_motion", [False, True], ids=["first_chunk", "continue_motion"])
@pytest.mark.parametrize("node_name,cls_name,module,model_base,model_type", [
    ("WanAnimateToVideo", "AnimateWanModel", "comfy.ldm.wan.model_animate", "WAN22_Animate", None),
    ("WanAnimate2ToVideo", "WanAnimate2Model", "comfy.ldm.wan.model_animate2", "WAN_Animate2", "animate2"),
], ids=["animate", "animate2"])
def test_wan22_animate_through_its_node(pk, node_name, cls_name, module, model_base, model_type, continue_motion):
    """ComfyUI's own WanAnimateToVideo / WanAnimate2ToVideo (reference image, pose video, CLIP vision; with and
    without continue_motion) make the conditioning and the latent: latent frame 0 is the reference image
    (``trim_latent`` 1), never steered and never in M; the video's first frame is latent frame 1, also when the
    continued motion frames sit there (cut after decoding, ``trim_image``). The face video is left out: its motion
    encoder works at 512x512, and its motion is added into the tokens after the block slot anyway."""
    base = tiny(cls_name, model_base, module=module, model_type=model_type, in_dim=36,
                num_layers=5 if model_type is None else 2)
    node = wan_node(node_name)
    clip = types.SimpleNamespace(penultimate_hidden_states=rand(1, 257, 1280, seed=3))
    kw = dict(reference_image=frames(1, seed=1), pose_video=frames(9, seed=2), clip_vision_output=clip)
    if continue_motion:
        kw["continue_motion"] = frames(5, seed=4)
    if node_name == "WanAnimateToVideo":
        kw["continue_motion_max_frames"] = 5
    pos, neg, lat, trim_latent, trim_image, _ = node.execute(
        positive=ce.text_cond(seed=1), negative=ce.text_cond(seed=2), vae=wan_vae(), width=64, height=64, length=9,
        batch_size=1, video_frame_offset=0, **kw).result
    assert trim_latent == 1 and tuple(lat["samples"].shape) == (1, 16, 4, 8, 8), (trim_latent, lat["samples"].shape)
    assert (trim_image > 0) == continue_motion
    hw = 16
    run_checked(pk, base, lat["samples"], pos, neg, hw, 0, (3, 4, 4), cond_tokens=lambda n: tokens(0, hw))


def test_wan22_s2v_through_wan_sound_image_to_video(pk):
    """ComfyUI's own WanSoundImageToVideo (reference image, audio encoder output, reference motion video) makes the
    conditioning and the latent: the video is the first T*H'*W' tokens; the reference image's and the motion
    frames' tokens after it are neither steered nor in M."""
    base = s2v()
    node = wan_node("WanSoundImageToVideo")
    dm = base.model.diffusion_model
    audio = {"encoded_audio_all_layers": [rand(1, 50, 1024, seed=20 + i) for i in range(25)]}   # 1 s at 50 Hz
    pos, neg, lat = node.execute(positive=ce.text_cond(seed=1), negative=ce.text_cond(seed=2), vae=wan_vae(),
                                 width=128, height=128, length=9, batch_size=1, ref_image=frames(1, 128, 128, seed=1),
                                 audio_encoder_output=audio, ref_motion=frames(10, 128, 128, seed=2)).result
    c = pos[0][1]
    assert tuple(lat["samples"].shape) == (1, 16, 3, 16, 16)
    assert {"audio_embed", "reference_latents", "reference_motion"} <= set(c), sorted(c)
    grid = (3, 8, 8)
    with torch.inference_mode():
        n_motion = dm.frame_packer(base.model.process_latent_in(c["reference_motion"]), dm)[0].shape[1]
    suffix = grid[1] * grid[2] + n_motion          # the reference image (one latent frame), then the motion frames
    run_checked(pk, base, lat["samples"], pos, neg, 0, suffix, grid, cond_tokens=lambda n: tokens(n - suffix, n))


# -- refused at the node ----------------------------------------------------------------------------------------------

def _refusal(pk, dm):
    """What STAS Model Patch says for a MODEL whose diffusion model is ``dm`` (a ModelPatcher around a stand-in
    model_base: these models are refused before anything runs)."""
    import comfy.model_patcher
    holder = torch.nn.Module()
    holder.diffusion_model = dm
    holder.model_config = None
    mp = comfy.model_patcher.ModelPatcher(holder, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    with pytest.raises(ValueError) as ei:
        stas(mp, blocks="0")
    return str(ei.value)


@pytest.mark.parametrize("module,cls_name,words", [
    ("comfy.ldm.wan.ar_model", "CausalWanModel", ("autoregressive", "chunk by chunk", "Use a Wan 2.1/2.2")),
    ("comfy.ldm.seedvr.model", "NaDiT", ("SeedVR2", "restor", "first-frame seam", "then upscale")),
    ("comfy.ldm.cosmos.predict2", "MiniTrainDIT", ("Cosmos", "Use a Wan")),
    ("comfy.ldm.cosmos.model", "GeneralDIT", ("Cosmos 1.0", "Use a Wan")),
], ids=["causal_wan", "seedvr2", "cosmos_predict2", "cosmos_1"])
def test_refused_at_the_node_by_class(pk, module, cls_name, words):
    cls = require_class(module, cls_name)
    dm = cls.__new__(cls)                                  # the class is all the refusal looks at
    torch.nn.Module.__init__(dm)
    msg = _refusal(pk, dm)
    assert msg.startswith(f"STAS Model Patch: STAS does not support {cls_name} models ("), msg
    for w in words:
        assert w in msg, f"{w!r} missing: {msg}"
    assert "Supported: Wan 2.1/2.2" in msg and "Mochi" in msg, msg
