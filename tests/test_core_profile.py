"""Unit tests of MA profile fingerprints (stas_core.profile): a profile belongs to one checkpoint."""
import json

import pytest
import torch
from torch import nn

from stas_core.profile import N_PROBES, MAProfile, ModelFingerprint


def tiny_dit(seed=0, dim=64, blocks=12, ffn=128):
    """A stand-in with the parameter kinds of a DiT: Linear weights + biases, norm scales."""
    torch.manual_seed(seed)
    layers = []
    for _ in range(blocks):
        layers += [nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim), nn.LayerNorm(dim)]
    m = nn.Sequential(*layers)
    with torch.no_grad():
        for mod in m:
            if isinstance(mod, nn.LayerNorm):   # trained norms are not exactly 1 / 0
                mod.weight.add_(0.1 * torch.randn(dim))
                mod.bias.add_(0.05 * torch.randn(dim))
    return m


def fp(module):
    return ModelFingerprint.of((n, tuple(p.shape), p) for n, p in module.named_parameters())


def test_same_checkpoint_matches_across_dtypes_and_copies():
    ref = fp(tiny_dit(0))
    assert len(ref.probes) == N_PROBES and ref.n_tensors == 12 * 6
    assert all(p.eps == torch.finfo(torch.float32).eps for p in ref.probes)
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        other = fp(tiny_dit(0).to(dtype))
        assert ref.mismatch(other) is None, dtype
        assert other.mismatch(ref) is None, dtype
    # fp8 storage (where torch has it): within fp8's resolution
    if hasattr(torch, "float8_e4m3fn"):
        assert ref.mismatch(fp(tiny_dit(0).to(torch.float8_e4m3fn))) is None


def test_another_checkpoint_of_the_same_shape_differs():
    a, b = fp(tiny_dit(0)), fp(tiny_dit(1))
    assert a.shapes == b.shapes
    why = a.mismatch(b)
    assert why is not None and "weights differ" in why and "same shape" in why
    # bf16 copies of two checkpoints still differ (the tolerance is the dtype's resolution, not more)
    assert fp(tiny_dit(0).bfloat16()).mismatch(fp(tiny_dit(1).bfloat16())) is not None


def test_a_fine_tune_that_moved_values_by_a_few_ulps_is_told_apart():
    """Per-value comparison: values moved by 3 bf16 ulps in random directions leave mean, mean |w| and
    rms within rounding, but not the sampled values; a bf16 copy of either still matches itself."""
    a = tiny_dit(0, dim=1024, blocks=3, ffn=1024).bfloat16()
    b = tiny_dit(0, dim=1024, blocks=3, ffn=1024).bfloat16()
    g = torch.Generator().manual_seed(3)
    eps = torch.finfo(torch.bfloat16).eps
    with torch.no_grad():
        for p in b.parameters():
            if p.ndim == 1:
                sign = torch.randint(0, 2, p.shape, generator=g).float() * 2 - 1
                p.copy_((p.float() * (1 + 3 * eps * sign)).bfloat16())
    fa, fb = fp(a), fp(b)
    assert all(abs(p.mean_abs - q.mean_abs) <= p.eps * p.mean_abs and abs(p.mean - q.mean) <= p.eps * p.mean_abs
               and abs(p.rms - q.rms) <= p.eps * p.rms for p, q in zip(fa.probes, fb.probes)), \
        "the statistics alone would tell them apart: the test does not test the per-value comparison"
    assert fa.mismatch(fb) is not None
    assert fa.mismatch(fp(a.float())) is None and fb.mismatch(fp(b.half())) is None


def test_a_small_change_to_probed_weights_is_seen_and_unprobed_weights_only_by_shape():
    m = tiny_dit(0)
    ref = fp(m)
    with torch.no_grad():
        m[0].bias.mul_(1.02)       # 2% on the first bias: a probe (the first 1-D tensor by name)
    assert ref.mismatch(fp(m)) is not None
    assert ref.mismatch(fp(tiny_dit(0, ffn=96))).startswith("its weight shapes differ")


def test_json_round_trip_and_meta_tensors_read_as_zeros():
    ref = fp(tiny_dit(0))
    assert ModelFingerprint.from_json(json.loads(json.dumps(ref.to_json()))) == ref
    meta = fp(tiny_dit(0).to("meta"))   # ComfyUI zero-fills a weight a checkpoint lacks (left on meta)
    assert meta.shapes == ref.shapes and len(meta.probes) == N_PROBES
    assert all(p.mean_abs == 0.0 for p in meta.probes)
    assert meta.mismatch(fp(tiny_dit(1).to("meta"))) is None and meta.mismatch(ref) is not None


def test_profile_saves_and_checks_its_fingerprint(tmp_path):
    a = fp(tiny_dit(0))
    p = MAProfile("Wan", 64, 12, {6: (3,)}, fingerprint=a)
    path = str(tmp_path / "p.safetensors")
    p.save(path)
    q = MAProfile.load(path)
    assert q.fingerprint == a and "model fingerprint: shape hash" in q.describe()
    q.check_model("Wan", 64, 12, fp(tiny_dit(0).half()))
    with pytest.raises(ValueError, match=r"profile: made on another Wan model: its weights differ .*each Wan 2\.2 "
                                         r"A14B expert needs its own\)\. Record a profile of this model"):
        q.check_model("Wan", 64, 12, fp(tiny_dit(1)))
    with pytest.raises(ValueError, match="profile: made for a Wan model with hidden size 64"):
        q.check_model("Wan", 128, 12, a)


def test_profile_without_fingerprint_loads_and_says_so(tmp_path):
    p = MAProfile("Wan", 64, 12, {6: (3,)})
    path = str(tmp_path / "old.safetensors")
    p.save(path)
    q = MAProfile.load(path)
    assert q.fingerprint is None and "no model fingerprint" in q.describe()
    q.check_model("Wan", 64, 12, fp(tiny_dit(1)))   # accepted: nothing to compare (the node logs a warning)


def test_block_sources_names_borrowed_blocks():
    p = MAProfile("Wan", 128, 30, {4: (1,), 10: (2,), 20: (3,)})
    assert p.block_sources([4, 7, 10, 16, 29]) == {4: 4, 7: 4, 10: 10, 16: 20, 29: 20}
    assert MAProfile("Wan", 128, 30, {}).block_sources([3]) == {}


def test_a_profile_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """A save that fails midway (here: safetensors writes half a file, then raises, as on a full disk) leaves the
    old profile intact and no temporary file behind; a save that finishes replaces it."""
    import safetensors.torch as st

    from stas_core.profile import MAProfile
    path = tmp_path / "p.safetensors"
    old = MAProfile("Wan", 128, 4, {2: (77,)})
    old.save(str(path))
    before = path.read_bytes()
    real = st.save_file

    def half_then_fail(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:
            f.truncate(len(open(filename, "rb").read()) // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(st, "save_file", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        MAProfile("Wan", 128, 4, {2: (1, 2, 3)}).save(str(path))
    assert path.read_bytes() == before and MAProfile.load(str(path)).channels == {2: (77,)}
    assert [p.name for p in tmp_path.iterdir()] == ["p.safetensors"], "a temporary file was left behind"
    monkeypatch.setattr(st, "save_file", real)
    MAProfile("Wan", 128, 4, {2: (1, 2, 3)}).save(str(path))
    assert MAProfile.load(str(path)).channels == {2: (1, 2, 3)}
