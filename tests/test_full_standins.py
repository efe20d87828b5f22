"""The full-size stand-in generator (tools/full_standins.py) against a real ComfyUI.

Writing the full set takes ~100 GB, so the GPU run (bench/workflows_gpu.py) does that. Here:
every spec is built on the meta device (no memory) and ComfyUI's own detection must recognise
its keys and shapes as the architecture its file name says, at the released parameter count;
one small file (the Wan 2.1 VAE) is written and loaded for real; both tokenizer stand-ins load
with ComfyUI's own tokenizer classes.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from stas_harness import comfy_env as ce

pytestmark = pytest.mark.integration

# file -> (parameters in billions as the released files have them, what ComfyUI must detect)
EXPECTED = {
    "wan2.1_t2v_1.3B_fp16.safetensors": (1.42, "WAN21_T2V"),
    "wan2.2_ti2v_5B_fp16.safetensors": (5.00, "WAN22_T2V"),
    "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors": (14.29, "WAN21_T2V"),
    "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors": (14.29, "WAN21_T2V"),
    "wan2.1_i2v_480p_14B_fp16.safetensors": (16.39, "WAN21_I2V"),
    "hunyuan_video_t2v_720p_bf16.safetensors": (12.82, "HunyuanVideo"),
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": (5.68, "T5_XXL"),
    "llava_llama3_fp8_scaled.safetensors": (7.50, "LLAMA3_8"),
    "clip_l.safetensors": (0.12, "CLIP_L"),
    "clip_vision_h.safetensors": (0.63, "clip_vision_config_h"),
    "wan_2.1_vae.safetensors": (0.13, "WanVAE 16"),
    "wan2.2_vae.safetensors": (0.70, "WanVAE 48"),
    "hunyuan_video_vae_bf16.safetensors": (0.25, "AutoencoderKL 16"),
    # workflows 10 and 11: parameters as ComfyUI builds these classes at 14B (the released files' counts are not
    # known here); wav2vec2 large is the published 0.32B
    "wan2.2_s2v_14B_fp8_scaled.safetensors": (16.30, "WAN22_S2V"),
    "wan_animate_2_int8_convrot.safetensors": (16.39, "WAN_Animate2"),
    "Wan2_1_VAE_bf16.safetensors": (0.13, "WanVAE 16"),
    "wav2vec2_large_english_fp16.safetensors": (0.32, "wav2vec2 1024"),
}


@pytest.fixture(scope="module")
def fs():
    ce.require_comfy()
    from tools import full_standins
    return full_standins


def meta_state_dict(fs, name):
    with torch.device("meta"):
        return fs.SPECS[name].build().state_dict()


# LoRA -> (its target in SPECS, parameters in millions: rank 64 on the 400 block linears of Wan 14B)
LORAS = {
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors": ("wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", 306.7),
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors": ("wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", 306.7),
    # the I2V blocks' cross attention also has k_img and v_img: 12 linears a block
    "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors": ("wan_animate_2_int8_convrot.safetensors", 359.1),
}


def test_every_workflow_file_has_a_full_size_spec(fs):
    from tools import make_standins
    assert set(EXPECTED) == set(make_standins.DIFFUSION) | set(make_standins.PLACEHOLDERS)
    assert set(LORAS) == set(make_standins.LORAS)
    assert set(LTX2) == set(make_standins.CHECKPOINTS) | set(make_standins.LTX2_PLACEHOLDERS)
    assert set(fs.SPECS) == set(EXPECTED) | set(LORAS) | set(LTX2)


# workflow 7's files -> parameters in billions: the checkpoint holds LTX-2's 18.88B audio-video transformer,
# its two text embeddings connectors (0.71B), the Gemma feature projection (3840 x 49 -> 3840, 0.72B), the
# video VAE (1.23B), the audio VAE and the vocoder (0.05B each); Gemma 3 12B as ComfyUI builds it (with its
# vision tower)
LTX2 = {"ltx-2-19b-dev-fp8.safetensors": 21.64, "gemma_3_12B_it_fp4_mixed.safetensors": 12.19}


def test_gemma3_12b_is_detected_and_its_tokenizer_loads(fs):
    from stas_harness.models import has_ltxav
    if not has_ltxav():
        pytest.skip("this ComfyUI has no LTX-2")
    import comfy.sd
    import comfy.text_encoders.lt as lt
    name = "gemma_3_12B_it_fp4_mixed.safetensors"
    sd = meta_state_dict(fs, name)
    assert sum(v.numel() for v in sd.values()) / 1e9 == pytest.approx(LTX2[name], abs=0.01)
    assert comfy.sd.detect_te_model(sd).name == "GEMMA_3_12B"
    tok = lt.LTXAVGemmaTokenizer(tokenizer_data=fs.SPECS[name].extras())
    ids = [t[0] for t in tok.tokenize_with_weights("a red fox runs through fresh snow")["gemma3_12b"][0]]
    text = [i for i in ids if i != 0]  # newer ComfyUI pads on the left
    assert text[0] == 2 and len(text) > 5 and 3 not in text  # bos, then known pieces (no unk)


def test_ltx2_checkpoint_is_detected_and_feeds_comfyuis_ltx2_text_encoder(fs):
    """The LTX-2 checkpoint's transformer is detected as LTXAV with 48 blocks at the released widths (from
    the file's config metadata, as ComfyUI reads the real one); the connector and projection keys are
    exactly the non-Gemma part of ComfyUI's LTX-2 text encoder, which loads them from the checkpoint."""
    from stas_harness.models import has_ltxav
    if not has_ltxav():
        pytest.skip("this ComfyUI has no LTX-2")
    import comfy.model_detection
    import comfy.text_encoders.lt as lt
    name = "ltx-2-19b-dev-fp8.safetensors"
    spec = fs.SPECS[name]
    sd = meta_state_dict(fs, name)
    assert sum(v.numel() for v in sd.values()) / 1e9 == pytest.approx(LTX2[name], abs=0.01)
    assert spec.folder == "checkpoints" and spec.diffusion
    cfg = comfy.model_detection.model_config_from_unet(sd, "model.diffusion_model.", metadata=spec.metadata())
    assert type(cfg).__name__ == "LTXAV" and cfg.unet_config["num_layers"] == 48
    assert sd["model.diffusion_model.transformer_blocks.47.attn1.to_q.weight"].shape == (4096, 4096)
    assert sd["model.diffusion_model.transformer_blocks.0.audio_attn1.to_q.weight"].shape == (2048, 2048)
    assert sd["text_embedding_projection.aggregate_embed.weight"].shape == (3840, 3840 * 49)
    with torch.device("meta"):
        te = lt.LTXAVTEModel(device="meta")
    own = {k for k in te.state_dict() if not k.startswith("gemma3_12b.")}
    missing, unexpected = te.load_sd({k: v for k, v in sd.items() if not k.startswith("model.diffusion_model.")
                                      or "_embeddings_connector." in k})
    assert not unexpected and own and not own & set(missing)
    planted = [k for k in sd if fs.is_ma_projection(k)]
    assert len(planted) == 48 and all(".ff.net.2." in k for k in planted)


def test_ltx2_checkpoint_vaes_are_what_comfyui_builds_from_its_metadata(fs):
    """The checkpoint's video VAE, audio VAE and vocoder keys and shapes are exactly the modules ComfyUI builds
    from the file's ``config`` metadata under the prefixes its loaders strip (``vae.`` for the checkpoint's
    VAE, ``audio_vae.`` and ``vocoder.`` for LTXV Audio VAE Loader), and the keys ComfyUI's VAE detection reads
    pick the LTX-2 layout (version 2)."""
    from stas_harness.models import has_ltxav
    if not has_ltxav():
        pytest.skip("this ComfyUI has no LTX-2")
    import comfy.model_detection
    from comfy.ldm.lightricks.vae.causal_audio_autoencoder import CausalAudioAutoencoder
    from comfy.ldm.lightricks.vae.causal_video_autoencoder import VideoVAE
    from comfy.ldm.lightricks.vocoders.vocoder import Vocoder
    name = "ltx-2-19b-dev-fp8.safetensors"
    sd = meta_state_dict(fs, name)
    meta = fs.SPECS[name].metadata()
    config = json.loads(meta["config"])
    cfg = comfy.model_detection.model_config_from_unet(sd, "model.diffusion_model.", metadata=meta)
    (prefix,) = cfg.vae_key_prefix

    def part(p):
        return {k[len(p):]: tuple(v.shape) for k, v in sd.items() if k.startswith(p)}

    vae = part(prefix)
    assert vae["decoder.up_blocks.0.res_blocks.0.conv1.conv.weight"][0] == 1024   # ComfyUI: version 1 or 2
    assert "encoder.down_blocks.1.conv.conv.bias" in vae                          # ... 2
    with torch.device("meta"):
        built = {"vae": VideoVAE(version=2, config=config["vae"]),
                 "audio_vae": CausalAudioAutoencoder(config=config["audio_vae"]),
                 "vocoder": Vocoder(config=config["vocoder"])}
    for p, module in built.items():
        want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        assert part(p + ".") == want, p
    assert built["vocoder"].upsample_factor == 240 and config["audio_vae"]["model"]["params"]["sampling_rate"] == 16000
    assert config["vae"]["timestep_conditioning"] is False


def test_ltx2_scaled_fp8_checkpoint_loads_through_comfyuis_checkpoint_path(fs):
    """The checkpoint's legacy scaled-fp8 layout (marker ``model.diffusion_model.scaled_fp8``, float8 block linears
    of the transformer only) is converted by ComfyUI's checkpoint loader, here on a tiny LTX-2: the transformer's
    block linears come back as ComfyUI's fp8 layers carrying their scales, and the connectors stay as written."""
    from stas_harness.models import LTXAV_TINY, has_ltxav, ltxav_module
    if not has_ltxav():
        pytest.skip("this ComfyUI has no LTX-2")
    import comfy.sd
    import comfy.utils
    if not hasattr(comfy.utils, "convert_old_quants"):
        pytest.skip("ComfyUI before 0.8 converts scaled fp8 only in diffusion-model files")
    full = fs.SPECS["ltx-2-19b-dev-fp8.safetensors"]

    def tiny():
        root, model = torch.nn.Module(), torch.nn.Module()
        model.diffusion_model = ltxav_module(num_layers=2, meta=True)
        root.model = model
        return root

    spec = fs.Spec(full.folder, tiny, full.dtype, fp8_scaled=True, fp8_under=full.fp8_under,
                   fp8_marker=full.fp8_marker, diffusion=True)
    sd = fs.random_state_dict(spec, seed=5)
    q = "model.diffusion_model.transformer_blocks.1.attn1.to_q."
    assert sd[q + "weight"].dtype == torch.float8_e4m3fn and "model.diffusion_model.scaled_fp8" in sd
    assert not [k for k in sd if k.endswith("scale_weight") and ".transformer_blocks." not in k]
    written = sd[q + "weight"].float() * sd[q + "scale_weight"]
    cfg = {**LTXAV_TINY, "num_layers": 2}
    model = comfy.sd.load_state_dict_guess_config(dict(sd), output_vae=False, output_clip=False,
                                                  metadata={"config": json.dumps({"transformer": cfg})})[0]
    layer = model.model.diffusion_model.transformer_blocks[1].attn1.to_q
    loaded = layer.weight
    if hasattr(loaded, "dequantize"):  # ComfyUI's quantized tensor
        loaded = loaded.dequantize()
    else:
        loaded = loaded.float() * layer.weight_scale.float()
    assert layer.weight.dtype == torch.float8_e4m3fn or hasattr(layer.weight, "dequantize")
    assert torch.allclose(loaded.float(), written, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_comfyui_detects_each_architecture_at_its_released_size(fs, name):
    import comfy.model_detection
    import comfy.sd
    from tools import make_standins
    spec = fs.SPECS[name]
    why = make_standins.missing(make_standins.DIFFUSION.get(name, ("",))[0])
    if why:
        pytest.skip(f"this ComfyUI has {why}")
    sd = meta_state_dict(fs, name)
    billions, what = EXPECTED[name]
    assert sum(v.numel() for v in sd.values()) / 1e9 == pytest.approx(billions, abs=0.01)
    if spec.diffusion:
        cfg = comfy.model_detection.model_config_from_unet(sd, "", metadata=spec.metadata() if spec.metadata else None)
        assert cfg is not None and type(cfg).__name__ == what
    elif spec.folder == "text_encoders":
        assert comfy.sd.detect_te_model(sd).name == what
    elif spec.folder == "audio_encoders":  # the key and width comfy.audio_encoders reads to pick wav2vec2 large
        kind, width = what.split()
        assert sd["encoder.layer_norm.bias"].shape[0] == int(width)
        assert "encoder.layers.23.attention.k_proj.weight" in sd and "encoder.layers.24.attention.k_proj.weight" not in sd
    elif spec.folder == "clip_vision":
        assert "vision_model.encoder.layers.30.layer_norm1.weight" in sd  # clip_vision.py's test for ViT-H
        assert "vision_model.encoder.layers.32.layer_norm1.weight" not in sd
    else:  # VAE: the keys sd.VAE() tests, in the order it tests them
        kind, ch = what.split()
        if kind == "WanVAE":
            assert "decoder.middle.0.residual.0.gamma" in sd
            assert ("decoder.upsamples.0.upsamples.0.residual.2.weight" in sd) == (ch == "48")
        else:
            assert sd["decoder.conv_in.conv.weight"].shape[1] == int(ch)


@pytest.mark.parametrize("name", sorted(LORAS))
def test_full_size_lora_fits_its_model_at_rank_64(fs, name):
    """Every linear of the 40 blocks (self/cross attention q k v o, ffn.0, ffn.2) gets lora_down, lora_up and
    alpha under ComfyUI's generic keys, shaped for the released Wan 14B the workflow loads it onto."""
    target, millions = LORAS[name]
    spec = fs.SPECS[name]
    assert spec.folder == "loras" and spec.lora_rank == 64 and not spec.diffusion
    shapes = fs.lora_shapes(spec)
    model = meta_state_dict(fs, target)
    assert len(shapes) == 40 * (12 if "I2V" in name else 10) * 3
    assert sum(math.prod(s) for s in shapes.values()) / 1e6 == pytest.approx(millions, abs=0.1)
    for key, shape in shapes.items():
        mod, kind = key[len("diffusion_model."):].split(".lora_") if ".lora_" in key else (key[16:-6], "alpha")
        out_f, in_f = model[mod + ".weight"].shape
        assert shape == {"down.weight": (64, in_f), "up.weight": (out_f, 64), "alpha": ()}[kind], key
    assert "diffusion_model.blocks.39.ffn.2.lora_up.weight" in shapes
    assert "diffusion_model.blocks.0.cross_attn.o.lora_down.weight" in shapes


def test_lora_loads_through_lora_loader_model_only_with_every_key_applied(fs, tmp_path, caplog):
    """The LoRA writer at a tiny Wan's shape: ComfyUI's LoraLoaderModelOnly maps every key (no 'lora key not
    loaded'), patches every block linear, and the patched weight is W + up @ down."""
    import logging

    import folder_paths
    import nodes as comfy_nodes
    from safetensors.torch import save_file

    from stas_harness.models import load_random, wan_module
    tiny = dict(num_layers=2, dim=128, num_heads=1)  # ComfyUI detects heads as dim // 128
    spec = fs.Spec("loras", lambda: wan_module(**tiny), "float32", lora_rank=4)
    sd = fs.random_state_dict(spec, seed=5)
    assert set(sd) == set(fs.lora_shapes(spec)) and sd["diffusion_model.blocks.1.ffn.0.alpha"].item() == 4
    (tmp_path / "loras").mkdir()
    save_file(sd, str(tmp_path / "loras" / "tiny_lora.safetensors"))
    folder_paths.add_model_folder_path("loras", str(tmp_path / "loras"))
    model = load_random(wan_module(**tiny), seed=2)
    q = model.model.diffusion_model.blocks[1].self_attn.q
    before = q.weight.detach().clone()
    with caplog.at_level(logging.WARNING):
        patched = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(model, "tiny_lora.safetensors", 1.0)[0]
    assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage()]
    linears = {k for k in model.model.state_dict() if k.startswith("diffusion_model.blocks.")
               and k.endswith(".weight") and k[len("diffusion_model."):] in fs.block_linear_keys(model.model.diffusion_model)}
    assert len(linears) == 2 * 10 and set(patched.patches) == linears
    patched.patch_model()
    try:
        after = q.weight.detach().clone()
    finally:
        patched.unpatch_model()
    delta = sd["diffusion_model.blocks.1.self_attn.q.lora_up.weight"] @ sd["diffusion_model.blocks.1.self_attn.q.lora_down.weight"]
    assert not torch.equal(after, before)
    assert torch.allclose(after, before + delta, atol=1e-5)
    assert torch.equal(q.weight.detach(), before)  # unpatched again


def test_scaled_fp8_layout_and_values(fs):
    """The fp8_scaled files use the official legacy layout, which ComfyUI converts on load."""
    spec = fs.SPECS["umt5_xxl_fp8_e4m3fn_scaled.safetensors"]
    small = fs.Spec(spec.folder, lambda: _tiny_t5(), spec.dtype, fp8_scaled=True)
    sd = fs.random_state_dict(small, seed=0)
    assert sd["scaled_fp8"].dtype == torch.float8_e4m3fn and sd["scaled_fp8"].numel() == 0
    q = "encoder.block.0.layer.0.SelfAttention.q.weight"
    assert sd[q].dtype == torch.float8_e4m3fn and sd[q[:-len("weight")] + "scale_weight"].dtype == torch.float32
    w = sd[q].float() * sd[q[:-len("weight")] + "scale_weight"]
    assert w.std().item() == pytest.approx(1 / w.shape[1] ** 0.5, rel=0.2)  # std 1/sqrt(fan_in)
    assert sd["shared.weight"].dtype == torch.bfloat16                     # embeddings stay bf16
    assert torch.all(sd["encoder.final_layer_norm.weight"] == 1)
    import comfy.utils
    if hasattr(comfy.utils, "convert_old_quants"):  # ComfyUI >= 0.8 turns the legacy layout into its quant format
        converted, _ = comfy.utils.convert_old_quants(dict(sd), "", {})
        assert q[:-len("weight")] + "comfy_quant" in converted and q[:-len("weight")] + "weight_scale" in converted


def _tiny_t5():
    import comfy.ops
    import comfy.text_encoders.t5 as t5
    cfg = dict(d_ff=64, d_kv=8, d_model=32, dense_act_fn="gelu_pytorch_tanh", is_gated_act=True,
               model_type="umt5", num_heads=4, num_layers=2, vocab_size=100)
    return t5.T5(cfg, None, None, comfy.ops.manual_cast)


def test_planted_channel_and_metadata(fs, tmp_path):
    spec = fs.SPECS["wan2.1_t2v_1.3B_fp16.safetensors"]
    import comfy.ldm.wan.model as wm
    import comfy.ops
    tiny = fs.Spec(spec.folder, lambda: wm.WanModel(dim=128, ffn_dim=256, num_heads=1, num_layers=2, text_dim=4096,
                                                    freq_dim=256, operations=comfy.ops.manual_cast), "float16", diffusion=True)
    plain = fs.random_state_dict(tiny, seed=1)
    planted = fs.random_state_dict(tiny, seed=1, ma_gain=100.0)
    k = "blocks.1.ffn.2.weight"
    assert torch.allclose(planted[k][77].float(), plain[k][77].float() * 100, rtol=1e-2)
    assert torch.equal(planted[k][76], plain[k][76]) and planted[k].dtype == torch.float16


def test_wan_vae_written_and_loaded_by_comfyui(fs, tmp_path, caplog):
    import logging

    import comfy.sd
    import comfy.utils
    path = fs.write(tmp_path, "wan_2.1_vae.safetensors", seed=3)
    sd, meta = comfy.utils.load_torch_file(str(path), return_metadata=True)
    assert "stand-in" in meta["comfyui_stas"]
    with caplog.at_level(logging.DEBUG):
        vae = comfy.sd.VAE(sd=sd, metadata=meta)
    assert not [r for r in caplog.records if "Missing VAE keys" in r.getMessage()]
    img = vae.decode(torch.randn(1, 16, 2, 4, 4))
    assert img.shape[-1] == 3 and torch.isfinite(img).all() and img.std() > 0.01


def test_umt5_tokenizer_is_stored_in_the_file_and_loads(fs):
    import comfy.text_encoders.wan as wan
    data = fs._umt5_extras()
    tok = wan.WanT5Tokenizer(tokenizer_data=data)
    ids = [t[0] for t in tok.tokenize_with_weights("a red fox runs through fresh snow")["umt5xxl"][0]]
    assert len(ids) == 512 and ids[0] != 0 and 1 in ids  # text, eos (1), then pad (0)


def test_llama_tokenizer_stand_in_keeps_llama3_special_ids(fs, tmp_path):
    transformers = pytest.importorskip("transformers")
    src = ce.comfyui_path() / "comfy" / "text_encoders" / "llama_tokenizer" / "tokenizer_config.json"
    (tmp_path / "tokenizer_config.json").write_text(src.read_text())
    (tmp_path / "tokenizer.json").write_text(fs.llama_tokenizer_json(json.loads(src.read_text())))
    tok = transformers.LlamaTokenizerFast.from_pretrained(str(tmp_path))
    ids = tok("<|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|>")["input_ids"]
    assert ids[0] == 128000 and 128006 in ids and 128007 in ids and ids[-1] == 128009


def test_llama_tokenizer_only_written_where_missing(fs, tmp_path):
    folder = tmp_path / "comfy" / "text_encoders" / "llama_tokenizer"
    folder.mkdir(parents=True)
    src = ce.comfyui_path() / "comfy" / "text_encoders" / "llama_tokenizer" / "tokenizer_config.json"
    (folder / "tokenizer_config.json").write_text(src.read_text())
    (folder / "tokenizer.json").write_text('{"real": true}')
    assert fs.ensure_llama_tokenizer(tmp_path) is None
    assert json.loads((folder / "tokenizer.json").read_text()) == {"real": True}
    (folder / "tokenizer.json").write_text("")  # the testbed exporter leaves an empty file for a missing blob
    assert fs.ensure_llama_tokenizer(tmp_path) == folder / "tokenizer.json"
    assert json.loads((folder / "tokenizer.json").read_text())["model"]["type"] == "BPE"
