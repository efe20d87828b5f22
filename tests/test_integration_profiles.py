"""MA profiles belong to one model, in a real ComfyUI (tiny random-weight Wan models).

A profile records a fingerprint of the model it was made on (weight shapes and statistics of
a few 1-D weights).  Wan 2.2 A14B's two experts have the same class and shapes but different
weights: a high-noise profile is refused on the low-noise expert, accepted on the same
checkpoint loaded again (also in bf16, and while a LoRA-style patch is applied in place).
A profile without fingerprint, and a steered block the profile lacks, are accepted and said
in the log.
"""
from __future__ import annotations

import functools
import logging

import pytest
import torch

from stas_harness import comfy_env as ce, models
from stas_harness.comfy_env import latent

pytestmark = pytest.mark.integration


@pytest.fixture
def profiles_dir(tmp_path, monkeypatch):
    """ComfyUI's models/stas_profiles folder redirected to a temp dir (the testbed stays untouched)."""
    import folder_paths
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "models"))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "stas_profiles",
                        ([str(tmp_path / "models" / "stas_profiles")], {".safetensors"}))
    return tmp_path / "models" / "stas_profiles"


# STAS Model Patch as ComfyUI calls it, at its declared defaults; on block 2, every step (callers give the profile).
stas = functools.partial(ce.stas, blocks="2", end_percent=1.0)


def record_profile(pk, model, name, blocks="2"):
    """MA Recorder -> sampler -> Save MA Profile -> Load MA Profile, as in a graph."""
    rm, rec = pk.rec.execute(model=model, blocks=blocks, steps="0", record="cond", channels="auto", top_k=2,
                             token_stride=0, max_memory_mb=64).result
    samples = ce.sample(rm, latent(), steps=2)
    # threshold 1: random weights have no massive activations; any channel's peak is >= its mean
    pk.save.execute(recording=rec, latent={"samples": samples}, filename=name, threshold=1.0, top_k=2,
                    overwrite=False)
    return pk.load.execute(profile_name=f"{name}.safetensors").result


def test_a14b_high_noise_profile_refused_on_low_noise_expert(pk, profiles_dir):
    high = models.tiny_wan_variant("t2v", seed=11)
    low = models.tiny_wan_variant("t2v", seed=12)
    assert type(high.model).__name__ == type(low.model).__name__ == "WAN21"
    prof, info = record_profile(pk, high, "a14b_high")
    assert prof.fingerprint is not None and "model fingerprint: shape hash" in info

    with pytest.raises(ValueError, match=r"^STAS Model Patch: profile: made on another Wan model: its weights differ "
                                         r".*each Wan 2\.2 A14B expert needs its own.*Record a profile of this model"):
        stas(low, profile=prof)

    # the same checkpoint: accepted, and steers
    steered = ce.sample(stas(high, profile=prof), latent(), steps=2)
    assert not torch.equal(steered, ce.sample(high, latent(), steps=2)), "the profile steered nothing"
    # loaded again from its state dict (another Python object), and in bf16: still the same checkpoint
    stas(models.tiny_wan_variant("t2v", seed=11), profile=prof)
    bf16 = models.load_random(models.wan_module("WanModel"), seed=11, model_options={"dtype": torch.bfloat16})
    assert bf16.model.diffusion_model.blocks[0].norm3.bias.dtype == torch.bfloat16
    stas(bf16, profile=prof)
    # a model of another variant with the same hidden size and block count (I2V): shapes differ
    with pytest.raises(ValueError, match="its weight shapes differ"):
        stas(models.tiny_wan_variant("i2v", seed=11), profile=prof)


def test_profile_check_reads_original_weights_under_an_in_place_patch(pk, profiles_dir):
    """A LoRA-style weight patch applied in place while the model is loaded does not make the
    checkpoint another model: the fingerprint reads ComfyUI's backup of the original weights."""
    import comfy.model_management as mm

    base = models.tiny_wan_variant("t2v", seed=11)
    prof, _ = record_profile(pk, base, "lora_base")
    lora = base.clone()
    dm = lora.model.diffusion_model
    keys = {f"diffusion_model.{n}": (torch.full_like(p, 0.5),) for n, p in dm.named_parameters() if p.ndim == 1}
    lora.add_patches(keys, 1.0)
    before = dm.blocks[0].norm3.bias.detach().clone()
    mm.load_models_gpu([lora])          # what a sampler does first: patches the weights in place
    try:
        if torch.equal(dm.blocks[0].norm3.bias, before):
            pytest.skip("this ComfyUI did not patch the weights in place on the CPU")
        assert pk.fingerprint.model_fingerprint(lora) == prof.fingerprint
        stas(lora, profile=prof)
        # without ComfyUI's backup the in-place patched weights would not match
        bare = pk.profile.ModelFingerprint.of((n, tuple(p.shape), p) for n, p in dm.named_parameters())
        assert prof.fingerprint.mismatch(bare) is not None
    finally:
        mm.unload_all_models()
    assert torch.equal(dm.blocks[0].norm3.bias, before)


def test_profile_without_fingerprint_and_borrowed_blocks_are_logged(pk, profiles_dir, caplog):
    model = models.tiny_wan_variant("t2v", seed=11)
    prof, _ = record_profile(pk, model, "block2")
    with caplog.at_level(logging.WARNING, logger="comfyui-stas"):
        stas(model, profile=prof, blocks="1-2")
    msgs = [r.getMessage() for r in caplog.records]
    assert any("no channels for block(s) 1; using those of the nearest profiled block (1 <- 2)" in m for m in msgs), msgs
    assert not any("no model fingerprint" in m for m in msgs)

    caplog.clear()
    old = pk.profile.MAProfile(prof.family, prof.hidden_size, prof.n_blocks, prof.channels, prof.reference)
    old.save(str(profiles_dir / "old.safetensors"))
    loaded, info = pk.load.execute(profile_name="old.safetensors").result
    assert loaded.fingerprint is None and "no model fingerprint" in info
    with caplog.at_level(logging.WARNING, logger="comfyui-stas"):
        stas(models.tiny_wan_variant("t2v", seed=12), profile=loaded)    # another checkpoint: cannot be told, only said
    msgs = [r.getMessage() for r in caplog.records]
    assert any("has no model fingerprint" in m and "Save it again" in m for m in msgs), msgs
