"""The full-size stand-in generator (tools/full_standins.py) against a real ComfyUI.

Writing the full set takes ~100 GB, so the GPU run (bench/workflows_gpu.py) does that. Here:
every spec is built on the meta device (no memory) and ComfyUI's own detection must recognise
its keys and shapes as the architecture its file name says, at the released parameter count;
one small file (the Wan 2.1 VAE) is written and loaded for real; both tokenizer stand-ins load
with ComfyUI's own tokenizer classes.
"""
from __future__ import annotations

import json

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
}


@pytest.fixture(scope="module")
def fs():
    ce.require_comfy()
    from tools import full_standins
    return full_standins


def meta_state_dict(fs, name):
    with torch.device("meta"):
        return fs.SPECS[name].build().state_dict()


def test_every_workflow_file_has_a_full_size_spec(fs):
    from tools import make_standins
    assert set(fs.SPECS) == set(make_standins.DIFFUSION) | set(make_standins.PLACEHOLDERS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_comfyui_detects_each_architecture_at_its_released_size(fs, name):
    import comfy.model_detection
    import comfy.sd
    sd = meta_state_dict(fs, name)
    billions, what = EXPECTED[name]
    assert sum(v.numel() for v in sd.values()) / 1e9 == pytest.approx(billions, abs=0.01)
    spec = fs.SPECS[name]
    if spec.diffusion:
        cfg = comfy.model_detection.model_config_from_unet(sd, "")
        assert cfg is not None and type(cfg).__name__ == what
    elif spec.folder == "text_encoders":
        assert comfy.sd.detect_te_model(sd).name == what
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
