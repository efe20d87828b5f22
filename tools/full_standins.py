"""Full-size random-weight stand-ins for every model file the example workflows load.

The tiny stand-ins (tools/make_standins.py) prove the graphs' logic on a CPU. This module writes
the real architectures at their real sizes, under the official ComfyUI repackaged file names, so
the shipped workflows run unchanged on a GPU machine that has no way to download the weights:

- the shapes come from ComfyUI's own classes (WanModel, WanModel_S2V, HunyuanVideo, LTXAVModel, T5, Llama2,
  Gemma3_12B, CLIP, Wav2Vec2Model, the Wan and Hunyuan VAEs), built on the meta device, so nothing is allocated
  until a tensor is written; LTX-2's checkpoint holds all its parts (transformer, text connectors, Gemma
  projection, video VAE, audio VAE, vocoder), with the VAE configs in its metadata as the real file has them;
- the dtypes follow the file names: ``fp16`` / ``bf16`` as named, and ``fp8_scaled`` in the same
  legacy scaled-fp8 layout as the official files (a ``scaled_fp8`` marker plus a per-layer
  ``scale_weight``; linear layers inside the transformer blocks in float8_e4m3fn);
- the values are random but well-conditioned (norm weights 1, biases 0, matrices with std
  1/sqrt(fan_in)), so activations stay finite through 40 blocks in fp16;
- LoRAs (workflow 8's LightX2V 4-step LoRAs) at their rank on every linear layer of the target
  model's blocks, in ComfyUI's generic ``diffusion_model.<module>.lora_up/lora_down/alpha`` keys;
- ComfyUI reads the umt5 tokenizer from the text-encoder file (``spiece_model``), so a small
  SentencePiece model is trained and stored there; the Llama-3 ``tokenizer.json`` that HunyuanVideo
  needs is part of ComfyUI itself, and where a ComfyUI copy lacks it (the snapshots available to
  this project do), :func:`ensure_llama_tokenizer` writes a small byte-level BPE stand-in with the
  Llama-3 special tokens at their real ids.

Nothing here is a real model: every file carries ``comfyui_stas`` metadata saying so.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# The prompts of the example workflows plus the HunyuanVideo system template: enough text for a
# tokenizer that covers what the workflows say.
CORPUS = """
a red fox runs through fresh snow in a birch forest at sunrise, cinematic, smooth camera tracking shot
a paper boat drifts down a rain-filled street gutter, close-up, shallow depth of field, soft light
blurry, low quality, jpeg artifacts, overexposed, static frame, still image, subtitles, text, watermark,
deformed, distorted, extra limbs, fused fingers, messy background, worst quality
Describe the video by detailing the following aspects: 1. The main content and theme of the video.
2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects.
3. Actions, events, behaviors temporal relationships, physical movement changes of the objects.
4. background environment, light, style and atmosphere. 5. camera angles, movements, and transitions
used in the video: system user assistant the a an of and with in on at to from by for is are was
0 1 2 3 4 5 6 7 8 9 . , : ; ! ? ' " ( ) - _ / abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ
"""


@dataclass(frozen=True)
class Spec:
    """One stand-in file: where it goes, how to build its module, and how to store its tensors."""
    folder: str                               # models subfolder
    build: Callable[[], object]               # returns a torch.nn.Module (on the meta device)
    dtype: str                                # "float16" | "bfloat16" | "float32"
    fp8_scaled: bool = False                  # linear layers in blocks as scaled float8_e4m3fn
    fp8_under: str = ""                       # ... only those whose key starts with this
    fp8_marker: str = "scaled_fp8"            # the legacy layout's marker key (ComfyUI's model prefix + scaled_fp8)
    extras: Callable[[], dict] | None = None  # extra tensors (tokenizer data)
    diffusion: bool = False                   # a diffusion model (MA channels may be planted)
    lora_rank: int = 0                        # > 0: a LoRA of that rank on build()'s block linears
    metadata: Callable[[], dict] | None = None  # extra safetensors metadata (a checkpoint's "config")


# -- builders: ComfyUI's own classes at the released sizes --------------------------------

def _ops():
    import comfy.ops
    return comfy.ops.manual_cast


def _wan(cls: str = "WanModel", **kw):
    def build():
        import comfy.ldm.wan.model as wm
        base = dict(patch_size=(1, 2, 2), text_len=512, in_dim=16, out_dim=16, freq_dim=256, text_dim=4096,
                    window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6)
        if cls == "WanModel":
            base["model_type"] = "t2v"
        return getattr(wm, cls)(**{**base, **kw}, operations=_ops())
    return build


def _wav2vec2_large():
    """ComfyUI's wav2vec2 at the size its loader picks for a 1024-wide encoder (large: 24 layers, 16 heads)."""
    from comfy.audio_encoders.wav2vec2 import Wav2Vec2Model
    return Wav2Vec2Model(embed_dim=1024, num_heads=16, num_layers=24, conv_norm=True, conv_bias=True,
                         do_normalize=True, do_stable_layer_norm=True, operations=_ops())


def _animate2_metadata() -> dict:
    # Wan Animate 2's keys are Wan 2.1 I2V's: ComfyUI tells it apart by the file's config metadata, as the real file's
    return {"config": json.dumps({"transformer": {"model_type": "animate2"}})}


WAN_1_3B = dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)
WAN_5B = dict(dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_dim=48, out_dim=48)
WAN_14B = dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)


def _hunyuan_video():
    from stas_harness.models import hunyuan_video_module  # the tests' builder, at the released size
    return hunyuan_video_module(depth=20, depth_single=40, hidden=3072, heads=24)


def _comfy_json(*parts: str) -> dict:
    import comfy.sd1_clip  # `comfy` is a namespace package: locate it through a module
    return json.loads(Path(comfy.sd1_clip.__file__).parent.joinpath(*parts).read_text())


def _umt5_xxl():
    import comfy.text_encoders.t5 as t5
    return t5.T5(_comfy_json("text_encoders", "umt5_config_xxl.json"), None, None, _ops())


def _llama3_8b():
    import comfy.text_encoders.llama as llama
    return llama.Llama2({}, None, None, _ops())


def _clip_l():
    import comfy.clip_model as cm
    return cm.CLIPTextModel(_comfy_json("sd1_clip_config.json"), None, None, _ops())


def _clip_vision_h():
    import comfy.clip_model as cm
    return cm.CLIPVisionModelProjection(_comfy_json("clip_vision_config_h.json"), None, None, _ops())


def _wan21_vae():
    import comfy.ldm.wan.vae as wv
    return wv.WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                     temperal_downsample=[False, True, True], dropout=0.0)


def _wan22_vae():
    import comfy.ldm.wan.vae2_2 as wv
    return wv.WanVAE(dim=160, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                     temperal_downsample=[False, True, True], dropout=0.0)


def _hunyuan_vae():
    from comfy.ldm.models.autoencoder import AutoencoderKL
    dd = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
          "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
          "conv3d": True, "time_compress": 4}
    return AutoencoderKL(ddconfig=dd, embed_dim=16)


# LTX-2 19B: ComfyUI's LTXAVModel defaults (video 32 x 128 = 4096 wide, audio 32 x 64 = 2048, Gemma 3 text
# 3840 per stream), 48 blocks; the file's "config" metadata carries it, as the real checkpoint's does.
LTX2_TRANSFORMER = dict(in_channels=128, audio_in_channels=128, cross_attention_dim=4096, audio_cross_attention_dim=2048,
                        attention_head_dim=128, audio_attention_head_dim=64, num_attention_heads=32,
                        audio_num_attention_heads=32, caption_channels=3840, num_layers=48)


def _ltx2_checkpoint():
    """``ltx-2-19b-dev-fp8`` under the checkpoint's own keys: the audio-video transformer
    (``model.diffusion_model.*``), the two text embeddings connectors that ComfyUI's LTX-2 text encoder reads
    from the checkpoint (``model.diffusion_model.{video,audio}_embeddings_connector.*``), the Gemma feature
    projection (``text_embedding_projection.aggregate_embed.weight``, 49 x 3840 -> 3840), the video VAE
    (``vae.*``), the audio VAE (``audio_vae.*``) and the vocoder (``vocoder.*``), each built from the config
    that :func:`_ltx2_metadata` stores in the file, as ComfyUI builds them from the real file's."""
    import torch

    import comfy.ldm.lightricks.av_model as am
    from comfy.ldm.lightricks.embeddings_connector import Embeddings1DConnector
    from comfy.ldm.lightricks.vae.causal_audio_autoencoder import CausalAudioAutoencoder
    from comfy.ldm.lightricks.vae.causal_video_autoencoder import VideoVAE
    from comfy.ldm.lightricks.vocoders.vocoder import Vocoder
    ops = _ops()
    dm = am.LTXAVModel(**{k: v for k, v in LTX2_TRANSFORMER.items()}, operations=ops)
    for stream in ("video", "audio"):  # part of the model in newer ComfyUI; of the text encoder in 0.8.0
        if not hasattr(dm, f"{stream}_embeddings_connector"):
            setattr(dm, f"{stream}_embeddings_connector",
                    Embeddings1DConnector(split_rope=True, double_precision_rope=True, operations=ops))
    root, model, proj = torch.nn.Module(), torch.nn.Module(), torch.nn.Module()
    model.diffusion_model = dm
    proj.aggregate_embed = ops.Linear(3840 * 49, 3840, bias=False)
    root.model, root.text_embedding_projection = model, proj
    root.vae = VideoVAE(config=ltx2_video_vae_config())
    root.audio_vae = CausalAudioAutoencoder(config=LTX2_AUDIO_VAE)
    root.vocoder = Vocoder(config=LTX2_VOCODER)
    return root


# The audio VAE and vocoder entries of the released 19B checkpoint's ``config`` metadata (its safetensors
# header), as published verbatim; ComfyUI builds both from them.
LTX2_AUDIO_VAE = {
    "preprocessing": {
        "audio": {"sampling_rate": 16000, "max_wav_value": 32768.0, "duration": 5.12, "stereo": True,
                  "causal_padding": 3},
        "stft": {"filter_length": 1024, "hop_length": 160, "win_length": 1024, "causal": True},
        "mel": {"n_mel_channels": 64, "mel_fmin": 0, "mel_fmax": 8000},
    },
    "model": {"params": {
        "sampling_rate": 16000, "embed_dim": 8,
        "ddconfig": {"double_z": True, "mel_bins": 64, "z_channels": 8, "resolution": 256, "downsample_time": False,
                     "in_channels": 2, "out_ch": 2, "ch": 128, "ch_mult": [1, 2, 4], "num_res_blocks": 2,
                     "attn_resolutions": [], "dropout": 0.0, "mid_block_add_attention": False, "norm_type": "pixel",
                     "causality_axis": "height"},
    }},
}
LTX2_VOCODER = {"resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "stereo": True,
                "upsample_rates": [6, 5, 2, 2, 2], "resblock_kernel_sizes": [3, 7, 11],
                "upsample_kernel_sizes": [16, 15, 8, 4, 4], "resblock": "1", "upsample_initial_channel": 1024}


def ltx2_video_vae_config() -> dict:
    """LTX-2's video VAE: the layout ComfyUI picks for the real file's keys (its own ``VideoVAE`` version 2,
    read from ComfyUI, not copied: encoder res blocks 4, 6, 6, 2, 2 between space, time and space-time
    downsamplers; decoder 4 x 5 res blocks with residual x2 space-time upsamplers), the same layout as diffusers'
    LTX-2.0 conversion, which also builds it without timestep conditioning."""
    from comfy.ldm.lightricks.vae.causal_video_autoencoder import VideoVAE
    default = getattr(VideoVAE, "get_default_config", None) or VideoVAE.guess_config  # its name before 0.9
    return {**default(None, 2), "timestep_conditioning": False}


def _ltx2_metadata() -> dict:
    return {"config": json.dumps({"transformer": LTX2_TRANSFORMER, "vae": ltx2_video_vae_config(),
                                  "audio_vae": LTX2_AUDIO_VAE, "vocoder": LTX2_VOCODER})}


def _gemma3_12b():
    """ComfyUI's Gemma 3 12B (48 layers, 3840 wide, with its vision tower and projector, as ComfyUI builds it)."""
    import comfy.text_encoders.llama as llama
    return llama.Gemma3_12B({}, None, None, _ops())


def _gemma_extras() -> dict:
    """Gemma's tokenizer, which ComfyUI reads from the text-encoder file: pad 0, eos 1, bos 2, unk 3."""
    import torch
    data = train_spiece(ids=dict(pad_id=0, eos_id=1, bos_id=2, unk_id=3))
    return {"spiece_model": torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()}


def _umt5_extras() -> dict:
    import torch
    return {"spiece_model": torch.frombuffer(bytearray(train_spiece()), dtype=torch.uint8).clone()}


SPECS: dict[str, Spec] = {
    "wan2.1_t2v_1.3B_fp16.safetensors": Spec("diffusion_models", _wan(**WAN_1_3B), "float16", diffusion=True),
    "wan2.2_ti2v_5B_fp16.safetensors": Spec("diffusion_models", _wan(**WAN_5B), "float16", diffusion=True),
    "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors": Spec("diffusion_models", _wan(**WAN_14B), "bfloat16",
                                                             fp8_scaled=True, diffusion=True),
    "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors": Spec("diffusion_models", _wan(**WAN_14B), "bfloat16",
                                                            fp8_scaled=True, diffusion=True),
    "wan2.1_i2v_480p_14B_fp16.safetensors": Spec("diffusion_models", _wan(model_type="i2v", **{**WAN_14B, "in_dim": 36}),
                                                 "float16", diffusion=True),
    "hunyuan_video_t2v_720p_bf16.safetensors": Spec("diffusion_models", _hunyuan_video, "bfloat16", diffusion=True),
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": Spec("text_encoders", _umt5_xxl, "bfloat16", fp8_scaled=True,
                                                   extras=_umt5_extras),
    "llava_llama3_fp8_scaled.safetensors": Spec("text_encoders", _llama3_8b, "bfloat16", fp8_scaled=True),
    "clip_l.safetensors": Spec("text_encoders", _clip_l, "float16"),
    "clip_vision_h.safetensors": Spec("clip_vision", _clip_vision_h, "float16"),
    "wan_2.1_vae.safetensors": Spec("vae", _wan21_vae, "bfloat16"),
    "wan2.2_vae.safetensors": Spec("vae", _wan22_vae, "bfloat16"),
    "hunyuan_video_vae_bf16.safetensors": Spec("vae", _hunyuan_vae, "bfloat16"),
    # Workflow 7's checkpoint: transformer (block linears in scaled fp8, as the file name says), connectors,
    # Gemma projection, video VAE, audio VAE and vocoder
    "ltx-2-19b-dev-fp8.safetensors": Spec("checkpoints", _ltx2_checkpoint, "bfloat16", diffusion=True,
                                          fp8_scaled=True, fp8_under="model.diffusion_model.transformer_blocks.",
                                          fp8_marker="model.diffusion_model.scaled_fp8", metadata=_ltx2_metadata),
    # Workflow 7's text encoder: Gemma 3 12B in bf16 (the real file is ComfyUI's fp4-mixed format, ~3x smaller)
    "gemma_3_12B_it_fp4_mixed.safetensors": Spec("text_encoders", _gemma3_12b, "bfloat16", extras=_gemma_extras),
    # Workflow 8's LightX2V 4-step LoRAs, one per A14B expert: rank 64 on every linear of the 40 blocks
    # (self/cross attention q k v o, ffn.0, ffn.2), ComfyUI's generic key format
    # (diffusion_model.blocks.N.<module>.lora_up.weight / .lora_down.weight / .alpha), bf16
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors": Spec("loras", _wan(**WAN_14B), "bfloat16",
                                                                        lora_rank=64),
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors": Spec("loras", _wan(**WAN_14B), "bfloat16",
                                                                       lora_rank=64),
    # Workflows 10 and 11 (last, so the files above keep their seeds)
    # Workflow 11: Wan 2.2 S2V 14B (WanModel_S2V: audio encoder and injectors, reference and motion frames)
    "wan2.2_s2v_14B_fp8_scaled.safetensors": Spec("diffusion_models", _wan("WanModel_S2V", **WAN_14B), "bfloat16",
                                                  fp8_scaled=True, diffusion=True),
    # Workflow 10: Wan Animate 2 (I2V-shaped, told apart by its metadata). The real file is int8 "convrot", a
    # format of ComfyUI's newer quantization with no legacy counterpart; written here in scaled fp8, the same size
    "wan_animate_2_int8_convrot.safetensors": Spec("diffusion_models", _wan(model_type="i2v", **{**WAN_14B, "in_dim": 36}),
                                                   "bfloat16", fp8_scaled=True, diffusion=True,
                                                   metadata=_animate2_metadata),
    "Wan2_1_VAE_bf16.safetensors": Spec("vae", _wan21_vae, "bfloat16"),
    "wav2vec2_large_english_fp16.safetensors": Spec("audio_encoders", _wav2vec2_large, "float16"),
    # Workflow 10's LightX2V I2V step-distill LoRA: rank 64 on every block linear of Wan 14B I2V (with k_img, v_img)
    "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors": Spec(
        "loras", _wan(model_type="i2v", **{**WAN_14B, "in_dim": 36}), "bfloat16", lora_rank=64),
}


# -- values ---------------------------------------------------------------------------------

_ONES = ("norm", "gamma", ".scale", "ln_", "layer_norm", "layernorm", "std-of-", "mean-of-stds")
_SMALL = ("modulation", "embedding", "embed_tokens", "shared.", "relative_attention_bias", "class_embedding")


def init_kind(key: str, shape: tuple[int, ...]) -> tuple[str, float]:
    """How to fill the tensor ``key``: ("ones"|"zeros"|"normal", std).

    Norm scales are 1 and biases 0, as a freshly initialised network has them; embeddings and
    modulation tables get std 0.02; every other matrix or kernel std 1/sqrt(fan_in), which keeps
    the residual stream's scale roughly constant per block, so a 40-block fp16 model stays finite.
    """
    k = key.lower()
    last = k.rsplit(".", 1)[-1]
    if last == "bias":
        return "zeros", 0.0
    if len(shape) <= 1 or (last in ("weight", "gamma", "scale") and math.prod(shape) == max(shape)):
        if any(t in k for t in _ONES):
            return "ones", 0.0
    if any(t in k for t in _SMALL) or len(shape) <= 1:
        return "normal", 0.02
    fan_in = math.prod(shape[1:])
    return "normal", 1.0 / math.sqrt(max(fan_in, 1))


def block_linear_keys(module) -> set[str]:
    """Weights of the linear layers inside the repeated blocks: the ones the official fp8_scaled
    files store in float8 (embeddings, heads and norms stay in bf16 there too)."""
    import torch
    out = set()
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Linear) and any(p in f".{name}." for p in (".blocks.", ".block.", ".layers.",
                                                                             ".double_blocks.", ".single_blocks.",
                                                                             ".transformer_blocks.", ".transformer_1d_blocks.")):
            out.add(f"{name}.weight")
    return out


def lora_state_dict(spec: Spec, module, seed: int, device: str = "cpu") -> dict:
    """A rank ``spec.lora_rank`` LoRA on every linear layer inside ``module``'s blocks, under the keys
    ComfyUI's loader maps onto a diffusion model (``diffusion_model.<module>.lora_up.weight``,
    ``.lora_down.weight``, ``.alpha`` = rank, so the scale is 1). ``lora_down`` has std 1/sqrt(fan_in) and
    ``lora_up`` 0.1/sqrt(rank): the LoRA moves each layer's output by about a tenth of its own scale."""
    import torch
    r = spec.lora_rank
    dtype = getattr(torch, spec.dtype)
    gen = torch.Generator(device=device).manual_seed(seed)
    out: dict = {}
    for key, shape in lora_shapes(spec, module).items():
        if key.endswith(".alpha"):
            out[key] = torch.tensor(float(r), dtype=dtype)
            continue
        std = 1.0 / math.sqrt(shape[1]) if key.endswith(".lora_down.weight") else 0.1 / math.sqrt(r)
        out[key] = (torch.randn(shape, generator=gen, device=device) * std).to(dtype).cpu()
    return out


def lora_shapes(spec: Spec, module=None) -> dict[str, tuple[int, ...]]:
    """The LoRA ``spec``'s keys and shapes (from ``module``, else ``spec.build()`` on the meta device)."""
    import torch
    if module is None:
        with torch.device("meta"):
            module = spec.build()
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    r, out = spec.lora_rank, {}
    for key in sorted(block_linear_keys(module), key=_natural):
        out_f, in_f = shapes[key]
        mod = "diffusion_model." + key[:-len(".weight")]
        out[mod + ".lora_down.weight"] = (r, in_f)
        out[mod + ".lora_up.weight"] = (out_f, r)
        out[mod + ".alpha"] = ()
    return out


def _natural(key: str) -> list:
    return [int(p) if p.isdigit() else p for p in key.split(".")]


def random_state_dict(spec: Spec, seed: int, device: str = "cpu", ma_gain: float = 0.0,
                      ma_channels: tuple[int, ...] = (77,)) -> dict:
    """The stand-in's tensors, generated on ``device`` and returned on the CPU."""
    import torch
    with torch.device("meta"):
        module = spec.build()
    if spec.lora_rank:
        return lora_state_dict(spec, module, seed, device)
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    fp8 = {k for k in block_linear_keys(module) if k.startswith(spec.fp8_under)} if spec.fp8_scaled else set()
    dtype = getattr(torch, spec.dtype)
    gen = torch.Generator(device=device).manual_seed(seed)
    out: dict = {}
    for key, shape in shapes.items():
        kind, std = init_kind(key, shape)
        if kind == "ones":
            t = torch.ones(shape, device=device)
        elif kind == "zeros":
            t = torch.zeros(shape, device=device)
        else:
            t = torch.randn(shape, generator=gen, device=device) * std
        if ma_gain and spec.diffusion and is_ma_projection(key):
            for c in ma_channels:
                if c < t.shape[0]:
                    t[c] *= ma_gain
        if key in fp8:
            scale = t.abs().amax().clamp(min=1e-12) / 448.0
            out[key] = (t / scale).to(torch.float8_e4m3fn).cpu()
            out[key[:-len("weight")] + "scale_weight"] = scale.float().reshape(()).cpu()
        else:
            out[key] = t.to(dtype).cpu()
    if fp8:
        out[spec.fp8_marker] = torch.empty(0, dtype=torch.float8_e4m3fn)
    if spec.extras:
        out.update(spec.extras())
    return out


def is_ma_projection(key: str) -> bool:
    """The last feed-forward projection of a block: scaling one of its output rows makes that
    residual channel massive (Wan ``blocks.i.ffn.2``, HunyuanVideo ``img_mlp.2`` / ``linear2``)."""
    return key.endswith(".weight") and (".ffn.2." in key or ".img_mlp.2." in key
                                        or (".transformer_blocks." in key and ".ff.net.2." in key)
                                        or (key.startswith("single_blocks.") and ".linear2." in key))


def write(models: Path, name: str, seed: int, device: str = "cpu", ma_gain: float = 0.0) -> Path:
    """Write the stand-in ``name`` under ``models/<folder>/``; returns its path."""
    from safetensors.torch import save_file
    spec = SPECS[name]
    sd = random_state_dict(spec, seed=seed, device=device, ma_gain=ma_gain)
    path = models / spec.folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"comfyui_stas": "random-weight stand-in at full size, not a real model"}
    if spec.metadata:
        meta.update(spec.metadata())
    if ma_gain and spec.diffusion:
        meta["comfyui_stas_planted_ma"] = json.dumps({"channels": [77], "gain": ma_gain})
    save_file(sd, str(path), metadata=meta)
    return path


# -- tokenizers -----------------------------------------------------------------------------

def train_spiece(vocab_size: int = 400, ids: dict | None = None) -> bytes:
    """A small SentencePiece model with umt5's special ids (pad 0, eos 1, unk 2, no bos), or ``ids``."""
    import sentencepiece as spm
    buf = io.BytesIO()
    lines = [ln for ln in CORPUS.splitlines() if ln.strip()] * 4
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size,
                                   model_type="unigram", **(ids or dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1)),
                                   hard_vocab_limit=False, character_coverage=1.0, minloglevel=2)
    return buf.getvalue()


def llama_tokenizer_json(config: dict, vocab_size: int = 600) -> str:
    """A byte-level BPE ``tokenizer.json`` that loads with ``LlamaTokenizerFast`` next to ComfyUI's
    own ``tokenizer_config.json``: trained on CORPUS, its plain vocabulary padded to 128000 entries
    so the special tokens (``<|begin_of_text|>``, ``<|start_header_id|>``, ...) keep their Llama-3
    ids, which ComfyUI's HunyuanVideo encoder looks for."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS.splitlines(), trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    specials = {int(i): t for i, t in config.get("added_tokens_decoder", {}).items()}
    first_special = min(specials) if specials else 128000
    n = len(vocab)
    while n < first_special:
        vocab[f"<|stas_unused_{n}|>"] = n
        n += 1
    data["added_tokens"] = [dict(id=i, content=t["content"], single_word=t.get("single_word", False),
                                 lstrip=t.get("lstrip", False), rstrip=t.get("rstrip", False),
                                 normalized=t.get("normalized", False), special=t.get("special", True))
                            for i, t in sorted(specials.items())]
    data["post_processor"] = {"type": "TemplateProcessing",
                              "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                                         {"Sequence": {"id": "A", "type_id": 0}}],
                              "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                                       {"Sequence": {"id": "A", "type_id": 0}},
                                       {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                                       {"Sequence": {"id": "B", "type_id": 1}}],
                              "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>",
                                                                       "ids": [128000], "tokens": ["<|begin_of_text|>"]}}}
    return json.dumps(data, ensure_ascii=False)


def ensure_llama_tokenizer(comfy_src: Path) -> Path | None:
    """Write a stand-in ``comfy/text_encoders/llama_tokenizer/tokenizer.json`` into the ComfyUI copy
    at ``comfy_src`` if, and only if, that copy lacks it; returns the path written, else None.
    A real ComfyUI install ships this file; the snapshots this project can fetch do not."""
    folder = comfy_src / "comfy" / "text_encoders" / "llama_tokenizer"
    path = folder / "tokenizer.json"
    if path.exists() and path.stat().st_size > 0:
        return None
    config = json.loads((folder / "tokenizer_config.json").read_text())
    path.write_text(llama_tokenizer_json(config))
    return path
