"""STAS and the MA Recorder on fp8 weights (UNETLoader weight_dtype fp8_e4m3fn) and under LoRAs
(LoraLoaderModelOnly before and after STAS Model Patch), MA profiles moved between a checkpoint and its
fp8 / GGUF copies (accepted; a copy of another checkpoint refused, naming the files), and a step-distilled
graph (LoRA, 4 steps, cfg 1: which steps the window steers), in a real ComfyUI on the CPU (tiny random-weight
Wan 2.1 saved as safetensors and loaded by ComfyUI's own loader nodes). Checks as in test_integration_gguf:
exact steering from the loaded model's own hidden states, the LoRA still applied, nothing left patched.
"""
from __future__ import annotations

import pytest
import torch

import test_integration_families as fam
import test_integration_gguf as gguf_tests
from test_integration_gguf import BLOCK, lora, refresh, state_dict, steered_exactly, write_lora
from stas_harness import comfy_env as ce
from stas_harness.comfy_env import latent

pytestmark = pytest.mark.integration
folders, ggnodes = gguf_tests.folders, gguf_tests.ggnodes   # the same fixtures (a module-scoped instance here)


def load_unet(folders, weight_dtype="default", name="tiny_wan21.safetensors", seed=0):
    """The tiny Wan 2.1 saved as safetensors and loaded by UNETLoader with ``weight_dtype``."""
    import nodes as comfy_nodes
    from safetensors.torch import save_file
    path = folders / "diffusion_models" / name
    if not path.exists():
        save_file({k: v.contiguous() for k, v in state_dict("wan21", seed).items()}, str(path))
    refresh()
    (model,) = comfy_nodes.UNETLoader().load_unet(name, weight_dtype)
    return model


def test_fp8_steered_exactly_recorded_and_reloaded(pk, folders):
    import comfy.model_management as mm
    model = load_unet(folders, "fp8_e4m3fn")
    assert model.model.diffusion_model.blocks[BLOCK].self_attn.q.weight.dtype == torch.float8_e4m3fn
    lat = latent()
    before = ce.sample(model, lat, steps=2, cfg=2.0)
    out, pre = steered_exactly(pk, model, lat)
    full = load_unet(folders)
    _, full_pre = steered_exactly(pk, full, lat)
    assert not torch.equal(pre.calls[0]["img"], full_pre.calls[0]["img"]), "fp8 storage changed nothing"
    mm.unload_all_models()
    again, _ = steered_exactly(pk, model, lat)
    assert torch.equal(again, out), "unloading between runs changed the steered result"
    # MA Recorder: the recorded peaks are the fp8 model's block output
    rm, rec = pk.rec.execute(model=model, blocks=str(BLOCK), steps="all", record="cond", channels="auto", top_k=2,
                             token_stride=0, max_memory_mb=64).result
    post = fam.Rec(inner=rm.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", BLOCK)])
    rm2 = rm.clone()
    rm2.set_model_patch_replace(post, "dit", "double_block", BLOCK)
    assert torch.equal(ce.sample(rm2, lat, steps=2, cfg=2.0), before), "recording changed the sampled latent"
    for s, call in enumerate(post.calls):
        row = call["cond_or_uncond"].index(0)
        assert torch.equal(rec.runs[-1].entries[(BLOCK, s, 0)].peak[0], call["img"][row].abs().amax(0).float())
    assert torch.equal(ce.sample(model, lat, steps=2, cfg=2.0), before), "the fp8 model was left patched"


@pytest.mark.parametrize("weight_dtype", ["default", "fp8_e4m3fn"])
def test_lora_before_and_after_stas(pk, folders, weight_dtype):
    """LoraLoaderModelOnly -> STAS and STAS -> LoraLoaderModelOnly steer alike, exactly, with the LoRA applied."""
    model = load_unet(folders, weight_dtype)
    lat = latent()
    plain = ce.sample(model, lat, steps=2, cfg=2.0)
    name = write_lora(folders, "tiny_wan21_lora.safetensors", model.model.diffusion_model)
    with_lora = lora(model, name)
    lora_only = ce.sample(with_lora, lat, steps=2, cfg=2.0)
    assert not torch.equal(lora_only, plain), "the LoRA changed nothing"
    lora_then_stas, _ = steered_exactly(pk, with_lora, lat)
    stas_then_lora = lora(fam.stas(model, blocks=str(BLOCK)), name)
    assert torch.equal(ce.sample(stas_then_lora, lat, steps=2, cfg=2.0), lora_then_stas), \
        "the node order of STAS and the LoRA changed the result"
    steered_only = ce.sample(fam.stas(model, blocks=str(BLOCK)), lat, steps=2, cfg=2.0)
    assert not torch.equal(lora_then_stas, steered_only), "the LoRA was lost under STAS"
    assert not torch.equal(lora_then_stas, lora_only), "STAS steered nothing under the LoRA"
    assert torch.equal(ce.sample(model, lat, steps=2, cfg=2.0), plain), "the unpatched model changed"
    assert not model.patches, "a LoRA leaked into the unpatched model"
    assert not model.model_options["transformer_options"].get("patches_replace", {}).get("dit")


@pytest.fixture
def profiles(folders, monkeypatch):
    """ComfyUI's models/stas_profiles folder redirected to a temp dir."""
    import folder_paths
    d = folders / "stas_profiles"
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "stas_profiles", ([str(d)], {".safetensors"}))
    return d


@pytest.mark.parametrize("copy", ["fp8", "gguf"])
def test_profile_of_the_checkpoint_on_its_quantized_copy(pk, folders, profiles, request, copy):
    """A profile recorded on the unquantized checkpoint is accepted on its fp8 / GGUF copy and steers the same
    channels as given explicitly; on the quantized copy of another checkpoint it is refused, naming the profile
    file and saying how to record one for the quantized model."""
    base = load_unet(folders)
    rm, rec = pk.rec.execute(model=base, blocks=str(BLOCK), steps="0", record="cond", channels="auto", top_k=2,
                             token_stride=0, max_memory_mb=64).result
    samples = ce.sample(rm, latent(), steps=2)
    pk.save.execute(recording=rec, latent={"samples": samples}, filename="tiny_wan21", threshold=1.0, top_k=2,
                    overwrite=True)
    prof = pk.load.execute(profile_name="tiny_wan21.safetensors").result[0]
    chans = ",".join(str(c) for c in prof.channels[BLOCK])

    def quantized(seed):
        if copy == "fp8":
            return load_unet(folders, "fp8_e4m3fn", name=f"tiny_wan21_seed{seed}.safetensors", seed=seed)
        ggn = request.getfixturevalue("ggnodes")
        import nodes as comfy_nodes  # noqa: F401
        from stas_harness import gguf as gg
        name = f"tiny_wan21_seed{seed}_Q8_0.gguf"
        if not (folders / "diffusion_models" / name).exists():
            gg.write_gguf(state_dict("wan21", seed), folders / "diffusion_models" / name, "Q8_0")
        refresh()
        return ggn.mappings["UnetLoaderGGUF"]().load_unet(name)[0]

    same = quantized(0)
    stas = ce.stas(same, blocks=str(BLOCK), end_percent=1.0, profile=prof)
    explicit = ce.stas(same, blocks=str(BLOCK), end_percent=1.0, channels=chans)
    assert torch.equal(ce.sample(stas, latent(), steps=2), ce.sample(explicit, latent(), steps=2))
    assert not torch.equal(ce.sample(stas, latent(), steps=2), ce.sample(same, latent(), steps=2))

    other = quantized(1)
    with pytest.raises(ValueError, match=r"^STAS Model Patch: profile: made on another Wan model: its weights differ") \
            as err:
        ce.stas(other, blocks=str(BLOCK), profile=prof)
    msg = str(err.value)
    assert "'tiny_wan21.safetensors'" in msg and "Record a profile of this model" in msg
    assert "GGUF or fp8 copy of the profile's own checkpoint is accepted" in msg


def test_distilled_four_steps_cfg1_window(pk, folders, caplog):
    """A step-distilled graph (a LoRA, 4 steps, cfg 1, simple scheduler): the default window (end_percent 0.4)
    steers steps 0 and 1 (sigma fractions 0 and 0.25 lie below 0.4), the others not; a window between two steps
    (0.3 to 0.45) steers none, and says so in the console before the first step; a run this short names the
    steps it steers."""
    import logging
    model = load_unet(folders)
    name = write_lora(folders, "tiny_wan21_distill.safetensors", model.model.diffusion_model, seed=3)
    distilled = lora(model, name)
    m, rec = fam.patched_with_recorders(pk, distilled, [("double_block", BLOCK, BLOCK)], end_percent=0.4)
    with caplog.at_level(logging.INFO, logger="comfyui-stas"):
        ce.sample(m, latent(), steps=4, cfg=1.0)
    lines = [r.getMessage() for r in caplog.records if "steers step(s)" in r.getMessage()]
    assert len(lines) == 1 and "steers step(s) 1, 2 of 4 (window 0-0.4 of denoising" in lines[0], lines
    pre, post = rec[BLOCK]
    assert [c["cond_or_uncond"] for c in pre.calls] == [[0]] * 4, "cfg 1 runs one pass per step"
    steered = [i for i, (a, b) in enumerate(zip(pre.calls, post.calls)) if not torch.equal(a["img"], b["img"])]
    assert steered == [0, 1]
    for i in steered:
        fam.check_call(pre.calls[i], post.calls[i], 0, fam.grid_of(latent()), 0)

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="comfyui-stas"):
        ce.sample(ce.stas(distilled, blocks=str(BLOCK), end_percent=0.25), latent(), steps=4, cfg=1.0)
    assert any("steers step(s) 1 of 4 (window 0-0.25" in r.getMessage() for r in caplog.records)

    caplog.clear()
    unsteered = ce.sample(distilled, latent(), steps=4, cfg=1.0)
    with caplog.at_level(logging.WARNING, logger="comfyui-stas"):
        out = ce.sample(ce.stas(distilled, blocks=str(BLOCK), start_percent=0.3, end_percent=0.45), latent(), steps=4,
                        cfg=1.0)
    assert torch.equal(out, unsteered)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("will steer nothing in this run: none of this run's 4 steps" in m for m in msgs), msgs


def test_profile_refusal_names_both_files_in_a_graph(pk, folders, profiles, tmp_path, monkeypatch):
    """Through ComfyUI's own executor: Save MA Profile records which file the recorded model came from, and STAS
    Model Patch refusing that profile on the fp8 copy of another checkpoint names both files and the profile."""
    import folder_paths
    ce.ensure_test_nodes()
    ce.ensure_extra_node("EmptyHunyuanLatentVideo", "nodes_hunyuan.py")
    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(tmp_path / "output"))
    load_unet(folders)                                                     # writes tiny_wan21.safetensors
    load_unet(folders, name="tiny_wan21_seed1.safetensors", seed=1)
    common = {
        "3": {"class_type": "STASTestTextEncoder", "inputs": {"kind": "wan"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": "a cat"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": "blurry"}},
        "6": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 32, "height": 32, "length": 5, "batch_size": 1}},
    }

    def ksampler(model):
        return {"class_type": "KSampler", "inputs": {
            "model": model, "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["6", 0], "seed": 0,
            "steps": 2, "cfg": 2.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}}

    record = dict(common, **{
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny_wan21.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "STASMARecorder", "inputs": {**ce.node_defaults(pk.rec), "model": ["1", 0],
                                                         "blocks": str(BLOCK), "top_k": 2}},
        "8": ksampler(["2", 0]),
        "9": {"class_type": "STASSaveMAProfile", "inputs": {
            "recording": ["2", 1], "latent": ["8", 0], "filename": "graph_profile", "threshold": 1.0, "top_k": 2,
            "overwrite": True}},
    })
    ex = ce.run_prompt(record)
    assert ex.success, ex.status_messages
    steer = dict(common, **{
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny_wan21_seed1.safetensors",
                                                     "weight_dtype": "fp8_e4m3fn"}},
        "10": {"class_type": "STASLoadMAProfile", "inputs": {"profile_name": "graph_profile.safetensors"}},
        "7": {"class_type": "STASModelPatch", "inputs": {**ce.node_defaults(pk.stas), "model": ["1", 0],
                                                         "blocks": str(BLOCK), "profile": ["10", 0]}},
        "8": ksampler(["7", 0]),
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": "stas_profile"}},
    })
    ex = ce.run_prompt(steer)
    assert not ex.success
    (err,) = [d for e, d in ex.status_messages if e == "execution_error"]
    assert err["node_type"] == "STASModelPatch"
    msg = err["exception_message"]
    assert msg.startswith("STAS Model Patch: profile: made on another Wan model: its weights differ"), msg
    assert ("The profile 'graph_profile.safetensors' was recorded on 'tiny_wan21.safetensors'; this model was loaded "
            "from 'tiny_wan21_seed1.safetensors'.") in msg, msg
