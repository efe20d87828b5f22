"""Random-weight video DiTs built from ComfyUI's own classes and loaded through ComfyUI's own
loader (comfy.sd.load_diffusion_model_state_dict), so ComfyUI's detection picks the model_base
class exactly as for a real checkpoint: tiny ones for the tests and tools, any size for the bench.

Each module is built only to get a state dict of the right keys and shapes (``meta=True``: on the
meta device, no memory, for the bench's real sizes); random_state_dict() draws the weights from
a seeded generator, so a seed gives the same model at any size, on any device, in any dtype.
"""
from __future__ import annotations

import contextlib


def random_state_dict(module, seed: int = 0, scale: float = 0.02, dtype=None, device="cpu") -> dict:
    """N(0, scale^2) weights (drawn in float32 from one seeded generator, in state-dict order), then ``dtype``."""
    import torch
    g = torch.Generator(device=device).manual_seed(seed)
    out = {}
    for k, v in module.state_dict().items():
        t = torch.randn(v.shape, generator=g, device=device, dtype=torch.float32) * scale
        out[k] = t if dtype is None else t.to(dtype)
    return out


def load_random(module, seed: int = 0, dtype=None, device="cpu", **kw):
    """``module``'s keys with random weights, loaded with comfy.sd.load_diffusion_model_state_dict (``kw``)."""
    import comfy.sd
    mp = comfy.sd.load_diffusion_model_state_dict(random_state_dict(module, seed=seed, dtype=dtype, device=device),
                                                  **kw)
    assert mp is not None, f"ComfyUI did not recognise the random-weight {type(module).__name__}"
    return mp


def _built(meta: bool):
    """(operations, context) to build a ComfyUI module in: real tensors, or shapes only on the meta device."""
    import comfy.ops
    import torch
    if meta:
        return comfy.ops.disable_weight_init, torch.device("meta")
    return comfy.ops.manual_cast, contextlib.nullcontext()


def dataclass_kwargs(dc, given):
    """Constructor kwargs for a ComfyUI params dataclass whose fields vary between versions:
    the fields of ``given`` it has, plus a neutral value (None / False / []) for every other
    required field."""
    import dataclasses
    names = {f.name for f in dataclasses.fields(dc)}
    out = {k: v for k, v in given.items() if k in names}
    for f in dataclasses.fields(dc):
        if f.name in out or f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        t = str(f.type)
        out[f.name] = False if "bool" in t else ([] if "list" in t else None)
    return out


# -- Wan -------------------------------------------------------------------------------------

def wan_module(cls_name: str = "WanModel", num_layers: int = 4, dim: int = 128, ffn_dim: int | None = None,
               num_heads: int = 2, meta: bool = False, **kw):
    """A ``comfy.ldm.wan.model.<cls_name>`` (WanModel, VaceWanModel, CameraWanModel): by default tiny (dim 128,
    4 blocks); Wan 2.1 1.3B is dim 1536, ffn_dim 8960, 12 heads, 30 blocks."""
    import comfy.ldm.wan.model as wm
    ops, where = _built(meta)
    kw.setdefault("in_dim", 16)
    kw.setdefault("out_dim", 16)
    with where:
        return getattr(wm, cls_name)(dim=dim, ffn_dim=ffn_dim or 2 * dim, num_heads=num_heads, num_layers=num_layers,
                                     text_dim=4096, freq_dim=256, operations=ops, **kw)


def tiny_wan(num_layers: int = 4, dim: int = 128, **kw):
    """Tiny random-weight Wan 2.1 T2V (``kw``: more WanModel arguments), loaded through ComfyUI's loader."""
    return load_random(wan_module(num_layers=num_layers, dim=dim, **kw))


WAN_VARIANTS = {
    "t2v": ("WanModel", {}),
    "i2v": ("WanModel", dict(model_type="i2v", in_dim=36)),
    "flf": ("WanModel", dict(model_type="i2v", in_dim=36, flf_pos_embed_token_number=514)),
    "vace": ("VaceWanModel", dict(vace_layers=2, vace_in_dim=96)),
    "camera": ("CameraWanModel", dict(model_type="camera", in_dim=32)),
    "fun_ref": ("WanModel", dict(model_type="i2v", in_dim=48, in_dim_ref_conv=16)),
    "ti2v_5b": ("WanModel", dict(in_dim=48, out_dim=48)),
}


def tiny_wan_variant(variant: str, seed: int = 0, num_layers: int = 4):
    """Tiny random-weight Wan of one variant, loaded through ComfyUI's loader.

    t2v (Wan 2.1 T2V, also one A14B expert), i2v, flf (first-last-frame: img_emb.emb_pos),
    vace, camera, fun_ref (Fun 1.1 control: in_dim 48 + ref_conv), ti2v_5b (Wan 2.2 5B:
    48-channel latent).
    """
    cls_name, kw = WAN_VARIANTS[variant]
    return load_random(wan_module(cls_name, num_layers=num_layers, **kw), seed=seed)


def wan(dim: int, ffn_dim: int, num_heads: int, num_layers: int, dtype, device, seed: int = 0, cls_name: str = "WanModel",
        **kw):
    """A Wan of the given dims in ``dtype`` on ``device`` (the bench's sizes; built on the meta device): Wan 2.1 T2V,
    or with ``kw`` another layout, e.g. ``**WAN_VARIANTS["ti2v_5b"][1]`` for Wan 2.2 TI2V 5B (dim 3072, ffn_dim 14336,
    24 heads, 30 blocks, 48-channel latent)."""
    return load_random(wan_module(cls_name, num_layers=num_layers, dim=dim, ffn_dim=ffn_dim, num_heads=num_heads,
                                  meta=True, **kw),
                       seed=seed, dtype=dtype, device=device, model_options={"dtype": dtype})


# -- HunyuanVideo (1.0, 1.5) and HunyuanImage 2.1 ----------------------------------------------

def hunyuan_video_module(depth: int = 2, depth_single: int = 2, hidden: int = 128, heads: int = 1,
                         meta: bool = False):
    """A HunyuanVideo (T2V layout: 16-ch latent, llama text 4096, clip pooled 768, guidance): by default tiny
    (hidden 128); the real model is hidden 3072, 24 heads, 20 double- and 40 single-stream blocks."""
    import comfy.ldm.hunyuan_video.model as hm
    pe = hidden // heads
    axes = [pe - 2 * (pe * 7 // 16), pe * 7 // 16, pe * 7 // 16]   # [16, 56, 56] for 128 / 1 and 3072 / 24
    params = dataclass_kwargs(hm.HunyuanVideoParams, dict(
        in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096, hidden_size=hidden,
        mlp_ratio=4.0, num_heads=heads, depth=depth, depth_single_blocks=depth_single, axes_dim=axes,
        theta=256, patch_size=[1, 2, 2], qkv_bias=True, guidance_embed=True, byt5=False, meanflow=False))
    ops, where = _built(meta)
    with where:
        return hm.HunyuanVideo(image_model="hunyuan_video", operations=ops, **params)


def tiny_hunyuan_video(depth: int = 2, depth_single: int = 2, seed: int = 0):
    """Tiny random-weight HunyuanVideo, loaded through ComfyUI's loader."""
    return load_random(hunyuan_video_module(depth, depth_single), seed=seed)


def hunyuan_video(depth: int, depth_single: int, dtype, device, hidden: int = 3072, heads: int = 24, seed: int = 0):
    """A HunyuanVideo in ``dtype`` on ``device`` (the bench's sizes; built on the meta device)."""
    return load_random(hunyuan_video_module(depth, depth_single, hidden, heads, meta=True), seed=seed, dtype=dtype,
                       device=device, model_options={"dtype": dtype})


def has_hunyuan_video15() -> bool:
    """HunyuanVideo 1.5 (vision_in / cond_type_embedding in ComfyUI's HunyuanVideo class) came after 0.3.64."""
    import dataclasses
    import comfy.ldm.hunyuan_video.model as hm
    return "vision_in_dim" in {f.name for f in dataclasses.fields(hm.HunyuanVideoParams)}


def hunyuan_video15_module(depth: int = 2, depth_single: int = 0, hidden: int = 128, heads: int = 1,
                           meanflow: bool = False, in_channels: int = 65, meta: bool = False):
    """A HunyuanVideo 1.5 (``tiny_hunyuan_video15``'s layout); the real one is hidden 2048, 16 heads (ComfyUI's
    detection takes heads = hidden / 128), 54 double-stream blocks, no single-stream block."""
    import comfy.ldm.hunyuan_video.model as hm
    params = dataclass_kwargs(hm.HunyuanVideoParams, dict(
        in_channels=in_channels, out_channels=32, vec_in_dim=None, context_in_dim=3584, hidden_size=hidden,
        mlp_ratio=4.0, num_heads=heads, depth=depth, depth_single_blocks=depth_single, axes_dim=[16, 56, 56],
        theta=256, patch_size=[1, 1, 1], qkv_bias=True, guidance_embed=False, byt5=True, meanflow=meanflow,
        use_cond_type_embedding=True, vision_in_dim=1152, meanflow_sum=meanflow))
    ops, where = _built(meta)
    with where:
        return hm.HunyuanVideo(image_model="hunyuan_video", operations=ops, **params)


def tiny_hunyuan_video15(depth: int = 2, depth_single: int = 0, seed: int = 0, meanflow: bool = False,
                         in_channels: int = 65):
    """Tiny HunyuanVideo 1.5 (its real layout but hidden 128: 32-ch latent + 32-ch image concat + mask = 65
    input channels, patch 1, Qwen2.5-VL text 3584, byT5 1472, SigLIP vision 1152, condition-type embedding,
    no CLIP pooled input, no guidance embedding; the real model has 54 double- and no single-stream block).
    T2V and I2V checkpoints have the same layout; ComfyUI loads both as model_base.HunyuanVideo15.
    ``in_channels=98`` (+ meanflow): the super-resolution model, model_base.HunyuanVideo15_SR_Distilled."""
    return load_random(hunyuan_video15_module(depth, depth_single, meanflow=meanflow, in_channels=in_channels),
                       seed=seed)


def hunyuan_video15(depth: int, dtype, device, hidden: int = 2048, heads: int = 16, depth_single: int = 0,
                    seed: int = 0):
    """A HunyuanVideo 1.5 (480p/720p T2V/I2V layout) in ``dtype`` on ``device`` (built on the meta device)."""
    return load_random(hunyuan_video15_module(depth, depth_single, hidden, heads, meta=True), seed=seed,
                       dtype=dtype, device=device, model_options={"dtype": dtype})


def tiny_hunyuan_image21(refiner: bool = False, seed: int = 0):
    """Tiny HunyuanImage 2.1 (2-D patch) or its refiner (patch 1x1x1): image models in the HunyuanVideo class."""
    import comfy.ldm.hunyuan_video.model as hm
    import comfy.ops
    params = dataclass_kwargs(hm.HunyuanVideoParams, dict(
        in_channels=64, out_channels=64, vec_in_dim=None, context_in_dim=3584, hidden_size=128, mlp_ratio=4.0,
        num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56] if refiner else [64, 64], theta=256,
        patch_size=[1, 1, 1] if refiner else [1, 1], qkv_bias=True, guidance_embed=refiner, byt5=not refiner,
        meanflow=False))
    m = hm.HunyuanVideo(image_model="hunyuan_video", operations=comfy.ops.manual_cast, **params)
    return load_random(m, seed=seed)


# -- other families ------------------------------------------------------------------------------

def cogvideox_module(num_layers: int = 3, v15: bool = False, heads: int = 2, time_embed_dim: int = 64,
                     meta: bool = False):
    """A ``comfy.ldm.cogvideo.model.CogVideoXTransformer3DModel`` (heads x 64 wide, T5 text 4096, rotary positions):
    tiny by default; CogVideoX 1.5 5B is 48 heads (3072), time_embed_dim 512, 42 blocks, ``v15`` (Linear patch 2,
    patch_size_t 2)."""
    import comfy.ldm.cogvideo.model as cm
    ops, where = _built(meta)
    with where:
        return cm.CogVideoXTransformer3DModel(
            num_attention_heads=heads, attention_head_dim=64, in_channels=16, out_channels=16,
            time_embed_dim=time_embed_dim, text_embed_dim=4096, num_layers=num_layers, patch_size=2,
            patch_size_t=2 if v15 else None, use_rotary_positional_embeddings=True,
            use_learned_positional_embeddings=False, operations=ops)


def tiny_cogvideox(num_layers: int = 3, v15: bool = False, seed: int = 0):
    """Tiny CogVideoX (ComfyUI >= 0.2x native): 1.0 layout (Conv2d patch 2, no temporal patch)
    or 1.5 layout (Linear patch, patch_size_t 2). Rotary positions, T5 text 4096."""
    return load_random(cogvideox_module(num_layers, v15), seed=seed)


def cogvideox(num_layers: int, dtype, device, heads: int = 48, time_embed_dim: int = 512, v15: bool = True,
              seed: int = 0):
    """A CogVideoX (default: 1.5 5B dims, T2V) in ``dtype`` on ``device`` (built on the meta device)."""
    return load_random(cogvideox_module(num_layers, v15, heads, time_embed_dim, meta=True), seed=seed, dtype=dtype,
                       device=device, model_options={"dtype": dtype})


def has_cogvideox() -> bool:
    import importlib.util
    return importlib.util.find_spec("comfy.ldm.cogvideo") is not None


def tiny_sd3(seed: int = 0):
    """Tiny SD3-style MMDiT (an image DiT STAS does not support); hidden = 64 * depth."""
    import comfy.ldm.modules.diffusionmodules.mmdit as mm
    import comfy.ops
    m = mm.MMDiT(input_size=None, patch_size=2, in_channels=16, out_channels=16, depth=2, adm_in_channels=2048,
                 context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}},
                 pos_embed_max_size=16, num_patches=256, pos_embed_scaling_factor=None, operations=comfy.ops.manual_cast)
    return load_random(m, seed=seed)


def tiny_ltxv(seed: int = 0, num_layers: int = 1):
    """Tiny LTX-Video 0.9 (128-ch latent, patch 1, T5 text 4096; inner dim 128 = 32 heads x 4)."""
    import comfy.ldm.lightricks.model as lm
    import comfy.ops
    m = lm.LTXVModel(in_channels=128, cross_attention_dim=128, attention_head_dim=4, num_attention_heads=32,
                     caption_channels=4096, num_layers=num_layers, operations=comfy.ops.manual_cast)
    return load_random(m, seed=seed)


# LTX-2 at tiny widths: video inner dim 128, audio 64, text 64 + 64 (ComfyUI detects only the video widths
# and the layer count from the weights; the rest reaches the model as the checkpoint's "config" metadata).
LTXAV_TINY = dict(in_channels=128, audio_in_channels=128, cross_attention_dim=128, audio_cross_attention_dim=64,
                  attention_head_dim=4, audio_attention_head_dim=2, num_attention_heads=32,
                  audio_num_attention_heads=32, caption_channels=64, connector_attention_head_dim=4,
                  connector_num_attention_heads=16, connector_num_layers=1)


def ltxav_module(num_layers: int = 2, meta: bool = False, **kw):
    """A ``comfy.ldm.lightricks.av_model.LTXAVModel`` (LTX-2 audio-video), tiny by default (``LTXAV_TINY``)."""
    import comfy.ldm.lightricks.av_model as am
    ops, where = _built(meta)
    with where:
        return am.LTXAVModel(num_layers=num_layers, operations=ops, **{**LTXAV_TINY, **kw})


def tiny_ltxav(num_layers: int = 2, seed: int = 0):
    """Tiny random-weight LTX-2 (model_base.LTXAV): NestedTensor latent of video [B, 128, T, H, W] and audio
    [B, 8, L, 16]; text conditioning 128 wide (video 64 + audio 64), with an integer attention_mask."""
    import json
    cfg = {**LTXAV_TINY, "num_layers": num_layers}
    return load_random(ltxav_module(num_layers), seed=seed, metadata={"config": json.dumps({"transformer": cfg})})


# LTX-2 (19B) at its real widths: ComfyUI's LTXAVModel defaults (video 32 heads x 128 = 4096, audio 32 x 64 = 2048,
# Gemma 3 text 3840 per stream, embeddings connectors 30 heads x 128 and 2 layers), 48 blocks in the real model.
LTXAV_REAL = dict(in_channels=128, audio_in_channels=128, cross_attention_dim=4096, audio_cross_attention_dim=2048,
                  attention_head_dim=128, audio_attention_head_dim=64, num_attention_heads=32,
                  audio_num_attention_heads=32, caption_channels=3840, connector_attention_head_dim=128,
                  connector_num_attention_heads=30, connector_num_layers=2)


def ltxav(num_layers: int, dtype, device, config: dict | None = None, seed: int = 0):
    """An LTX-2 (``config``: LTXAVModel arguments, default ``LTXAV_REAL``) in ``dtype`` on ``device``, built on the
    meta device; ``config`` reaches ComfyUI as a checkpoint's "config" metadata, as in ``tiny_ltxav``. Its text
    conditioning is 2 x caption_channels wide (7680 for the real model), with an integer attention_mask."""
    import json
    cfg = {**(LTXAV_REAL if config is None else config), "num_layers": num_layers}
    return load_random(ltxav_module(**cfg, meta=True), seed=seed, dtype=dtype, device=device,
                       model_options={"dtype": dtype}, metadata={"config": json.dumps({"transformer": cfg})})


def has_ltxav() -> bool:
    """LTX-2 (comfy.ldm.lightricks.av_model) came after 0.3.64."""
    import importlib.util
    return importlib.util.find_spec("comfy.ldm.lightricks.av_model") is not None


def kandinsky5_module(num_visual_blocks: int = 3, model_dim: int = 128, ff_dim: int = 256, image: bool = False,
                      meta: bool = False, time_dim: int = 64, num_text_blocks: int = 1):
    """A ``comfy.ldm.kandinsky5.model.Kandinsky5``: video (latent 16 + image 16 + mask 1 channels, patch 1x2x2,
    Qwen2.5-VL text 3584, CLIP pooled 768) or ``image`` (16 channels, no concat; ComfyUI's Kandinsky5Image
    needs model_dim 2560). Lite video is model_dim 1792, ff_dim 7168, time_dim 512, 2 text and 32 visual blocks;
    Pro 4096, 60 visual blocks."""
    import comfy.ldm.kandinsky5.model as km
    ops, where = _built(meta)
    with where:
        return km.Kandinsky5(model_dim=model_dim, ff_dim=ff_dim, time_dim=time_dim, num_text_blocks=num_text_blocks,
                             num_visual_blocks=num_visual_blocks, visual_embed_dim=64 if image else 132,
                             axes_dims=(32, 48, 48) if model_dim in (2560, 4096) else (16, 24, 24), operations=ops)


def tiny_kandinsky5(num_visual_blocks: int = 3, seed: int = 0, image: bool = False):
    """Tiny random-weight Kandinsky 5 video (model_base.Kandinsky5), or with ``image`` a small Kandinsky 5
    image model (model_base.Kandinsky5Image: model_dim 2560, one block)."""
    if image:
        return load_random(kandinsky5_module(1, model_dim=2560, ff_dim=64, image=True, meta=True), seed=seed)
    return load_random(kandinsky5_module(num_visual_blocks), seed=seed)


def kandinsky5(num_visual_blocks: int, dtype, device, model_dim: int = 1792, ff_dim: int = 7168, time_dim: int = 512,
               num_text_blocks: int = 2, seed: int = 0):
    """A Kandinsky 5 video model (default: Lite dims) in ``dtype`` on ``device`` (built on the meta device)."""
    return load_random(kandinsky5_module(num_visual_blocks, model_dim, ff_dim, meta=True, time_dim=time_dim,
                                         num_text_blocks=num_text_blocks),
                       seed=seed, dtype=dtype, device=device, model_options={"dtype": dtype})


def has_kandinsky5() -> bool:
    import importlib.util
    return importlib.util.find_spec("comfy.ldm.kandinsky5") is not None


# Mochi's blocks assert an MLP width of 12288 (real: hidden 3072 x 4), and ComfyUI's detection hard-codes the
# real config, so a small Mochi is hidden 128 x 96 (text 256 wide, real 4096) and built from this config
# with ComfyUI's GenmoMochi.
MOCHI_TINY = dict(image_model="mochi_preview", patch_size=2, num_heads=2, hidden_size_x=128, hidden_size_y=64,
                  mlp_ratio_x=96.0, mlp_ratio_y=4.0, learn_sigma=False, in_channels=12, qk_norm=True,
                  qkv_bias=False, out_bias=True, attn_drop=0.0, patch_embed_bias=True, posenc_preserve_area=True,
                  timestep_mlp_bias=True, attend_to_padding=False, timestep_scale=1000.0, use_t5=True,
                  t5_feat_dim=256, t5_token_length=256, rope_theta=10000.0)


# Mochi 1 preview at its real widths (what ComfyUI's detection hard-codes, depth aside: 48 there).
MOCHI_REAL = {**MOCHI_TINY, "num_heads": 24, "hidden_size_x": 3072, "hidden_size_y": 1536, "mlp_ratio_x": 4.0,
              "t5_feat_dim": 4096}


def mochi(depth: int, dtype=None, device="cpu", config: dict | None = None, seed: int = 0):
    """A random-weight Mochi 1 (model_base.GenmoMochi; ``config`` default ``MOCHI_REAL``) with ``depth`` blocks in
    ``dtype`` on ``device``: built on the meta device, then by ComfyUI's own supported_models.GenmoMochi from the
    config (its detection fixes depth 48), weights loaded as a checkpoint's are."""
    import comfy.ldm.genmo.joint_model.asymm_models_joint as gm
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.ops
    import comfy.supported_models
    import torch
    cfg = {**(MOCHI_REAL if config is None else config), "depth": depth}
    with torch.device("meta"):
        module = gm.AsymmDiTJoint(operations=comfy.ops.disable_weight_init,
                                  **{k: v for k, v in cfg.items() if k != "image_model"})
    sd = random_state_dict(module, seed=seed, dtype=dtype, device=device)
    config = comfy.supported_models.GenmoMochi(cfg)
    config.set_inference_dtype(dtype or torch.float32, None)
    model = config.get_model(sd, "")
    model.load_model_weights(sd, "")
    del sd
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def tiny_mochi(depth: int = 3, seed: int = 0):
    """Tiny random-weight Mochi 1 (model_base.GenmoMochi, 12-ch latent, patch 2, text 256 wide), built by
    ComfyUI's own supported_models.GenmoMochi from ``MOCHI_TINY``; weights loaded as a checkpoint's are."""
    return mochi(depth, config=MOCHI_TINY, seed=seed)


def has_cosmos_predict2() -> bool:
    import importlib.util
    return importlib.util.find_spec("comfy.ldm.cosmos.predict2") is not None


def tiny_cosmos_predict2(seed: int = 0):
    """Small Cosmos Predict2 (MiniTrainDIT, model_base.CosmosPredict2; width 1024, as detection fixes 16 heads):
    a video DiT STAS does not handle."""
    import comfy.ldm.cosmos.predict2 as cp
    import comfy.ops
    m = cp.MiniTrainDIT(max_img_h=240, max_img_w=240, max_frames=128, in_channels=16, out_channels=16,
                        patch_spatial=2, patch_temporal=1, concat_padding_mask=True, model_channels=1024, num_blocks=1,
                        num_heads=16, crossattn_emb_channels=1024, pos_emb_cls="rope3d", pos_emb_learnable=True,
                        use_adaln_lora=True, adaln_lora_dim=256, operations=comfy.ops.manual_cast)
    return load_random(m, seed=seed)
