"""Unit tests of stas_core.steer.steer_: the STAS op against a slow reference of the formula."""
import pytest
import torch

from stas_core.steer import steer_


def reference(h, vis_start, n_visual, token_idx, channels, alpha, lam, rows=None, valid=None):
    """STAS-SPEC section 2, element by element, in float32 (sign(0) = +1)."""
    out = h.clone()
    rows = range(h.shape[0]) if rows is None else [int(r) for r in rows]
    for b in rows:
        for k, d in enumerate(channels.tolist()):
            if valid is not None and not bool(valid[k]):
                continue
            m = h[b, vis_start:vis_start + n_visual, d].float().abs().max()
            for n in token_idx.tolist():
                cur = h[b, vis_start + n, d].float()
                target = alpha * m * (1.0 if cur >= 0 else -1.0)
                new = target if lam == 1.0 else cur + lam * (target - cur)
                if h.dtype.is_floating_point:
                    fi = torch.finfo(h.dtype)
                    new = new.clamp(fi.min, fi.max)
                out[b, vis_start + n, d] = new.to(h.dtype)
    return out


def make(b=2, l=30, d=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, l, d, generator=g).to(dtype)


@pytest.mark.parametrize("alpha,lam", [(1.0, 1.0), (0.5, 1.0), (1.7, 1.0), (1.0, 0.5), (0.0, 1.0), (2.0, 0.25)])
def test_matches_formula(alpha, lam):
    h = make()
    tok = torch.tensor([0, 1, 2, 7, 19])
    ch = torch.tensor([3, 11])
    exp = reference(h, 4, 20, tok, ch, alpha, lam)
    got = steer_(h.clone(), 4, 20, tok, ch, alpha, lam)
    if lam == 1.0:
        assert torch.equal(got, exp)
    else:
        torch.testing.assert_close(got, exp, rtol=1e-6, atol=1e-6)


def test_in_place_and_everything_else_bit_identical():
    h = make()
    before = h.clone()
    tok = torch.tensor([0, 5])
    ch = torch.tensor([2, 9])
    out = steer_(h, 3, 20, tok, ch, 1.0, 1.0)
    assert out is h
    changed = torch.zeros_like(h, dtype=torch.bool)
    for t in (3, 8):
        for c in (2, 9):
            changed[:, t, c] = True
    assert torch.equal(h[~changed], before[~changed])
    # text/prefix tokens outside [vis_start, vis_start + n_visual) are never read as reference either
    assert torch.equal(h[:, :3], before[:, :3]) and torch.equal(h[:, 23:], before[:, 23:])


def test_reference_is_global_max_over_visual_tokens_only():
    h = torch.zeros(1, 10, 4)
    h[0, 0, 1] = 1000.0   # before the visual tokens: ignored
    h[0, 9, 1] = -500.0   # after them: ignored
    h[0, 6, 1] = -8.0     # visual, largest |h|, negative
    h[0, 2, 1] = 3.0
    h[0, 3, 1] = -2.0
    steer_(h, 2, 6, torch.tensor([0, 1]), torch.tensor([1]), 0.5, 1.0)
    assert h[0, 2, 1].item() == 4.0 and h[0, 3, 1].item() == -4.0   # sign kept, 0.5 * 8
    assert h[0, 0, 1].item() == 1000.0 and h[0, 9, 1].item() == -500.0


def test_sign_of_zero_is_plus():
    h = torch.zeros(1, 4, 2)
    h[0, 3, 0] = -6.0
    steer_(h, 0, 4, torch.tensor([0, 1]), torch.tensor([0]), 1.0, 1.0)
    assert h[0, :2, 0].tolist() == [6.0, 6.0]


def test_per_row_max_and_rows_subset():
    h = make(b=4)
    h[1, 10, 5] = 50.0
    h[3, 12, 5] = -90.0
    tok, ch = torch.tensor([0, 1]), torch.tensor([5])
    rows = torch.tensor([1, 3])
    exp = reference(h, 0, 30, tok, ch, 1.0, 1.0, rows=rows)
    got = steer_(h.clone(), 0, 30, tok, ch, 1.0, 1.0, samples=rows)
    assert torch.equal(got, exp)
    assert got[1, 0, 5].abs().item() == 50.0 and got[3, 0, 5].abs().item() == 90.0
    assert torch.equal(got[0], h[0]) and torch.equal(got[2], h[2])


def test_valid_mask_leaves_channels_alone():
    h = make()
    tok, ch = torch.tensor([0, 4]), torch.tensor([1, 6, 8])
    valid = torch.tensor([True, False, True])
    got = steer_(h.clone(), 0, 30, tok, ch, 1.0, 1.0, valid=valid)
    assert torch.equal(got, reference(h, 0, 30, tok, ch, 1.0, 1.0, valid=valid))
    assert torch.equal(got[..., 6], h[..., 6])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_math_in_float32(dtype):
    h = make(dtype=dtype)
    tok, ch = torch.tensor([1, 3, 5]), torch.tensor([0, 15])
    got = steer_(h.clone(), 0, 30, tok, ch, 1.3, 0.7)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), reference(h, 0, 30, tok, ch, 1.3, 0.7).float(), rtol=0, atol=0)


def test_fp16_result_clamped_to_finite_range():
    h = torch.zeros(1, 4, 2, dtype=torch.float16)
    h[0, 3, 0] = 60000.0
    h[0, 3, 1] = -60000.0
    steer_(h, 0, 4, torch.tensor([0]), torch.tensor([0, 1]), 2.0, 1.0)
    assert torch.isfinite(h).all()
    assert h[0, 0, 0].item() == torch.finfo(torch.float16).max
    # the zero at (0, 0, 1) is pulled to +alpha*max (sign(0) = +1), clamped too
    assert h[0, 0, 1].item() == torch.finfo(torch.float16).max


def test_blend_zero_is_identity():
    h = make()
    got = steer_(h.clone(), 0, 30, torch.arange(30), torch.arange(16), 1.0, 0.0)
    assert torch.equal(got, h)


def test_alpha_one_blend_one_at_the_max_token_is_a_fixed_point():
    h = make(b=1)
    d = 4
    n = int(h[0, :, d].abs().argmax())
    got = steer_(h.clone(), 0, 30, torch.tensor([n]), torch.tensor([d]), 1.0, 1.0)
    assert torch.equal(got, h)


def test_empty_token_set_is_noop():
    h = make()
    got = steer_(h.clone(), 0, 30, torch.zeros(0, dtype=torch.long), torch.tensor([1]), 1.0, 1.0)
    assert torch.equal(got, h)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="hidden state"):
        steer_(torch.zeros(4, 4), 0, 4, torch.tensor([0]), torch.tensor([0]), 1.0, 1.0)
    with pytest.raises(ValueError, match="outside"):
        steer_(torch.zeros(1, 4, 4), 2, 4, torch.tensor([0]), torch.tensor([0]), 1.0, 1.0)
    with pytest.raises(ValueError, match="outside"):
        steer_(torch.zeros(1, 4, 4), -1, 2, torch.tensor([0]), torch.tensor([0]), 1.0, 1.0)


def test_no_host_sync_under_sync_debug_mode():
    """Nothing on the hot path reads a tensor value on the host (checked where CUDA exists)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA for torch.cuda.set_sync_debug_mode")
    h = make().cuda()
    tok, ch = torch.tensor([0, 1]).cuda(), torch.tensor([2]).cuda()
    rows, valid = torch.tensor([1]).cuda(), torch.tensor([True]).cuda()
    torch.cuda.set_sync_debug_mode("error")
    try:
        steer_(h, 0, 30, tok, ch, 1.0, 0.5, samples=rows, valid=valid)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_reference(dtype):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    h = make(b=3, l=200, d=64, dtype=dtype)
    tok, ch = torch.tensor([0, 1, 50, 199]), torch.tensor([5, 63])
    rows, valid = torch.tensor([0, 2]), torch.tensor([True, True])
    exp = reference(h, 0, 200, tok, ch, 1.0, 1.0, rows=rows, valid=valid)
    got = steer_(h.cuda(), 0, 200, tok.cuda(), ch.cuda(), 1.0, 1.0, samples=rows.cuda(), valid=valid.cuda())
    assert torch.equal(got.cpu(), exp)


def test_works_under_torch_compile_without_graph_breaks():
    compiled = torch.compile(steer_, backend="eager", fullgraph=True)
    h = make()
    tok, ch = torch.tensor([0, 2]), torch.tensor([1, 3])
    exp = reference(h, 0, 30, tok, ch, 1.0, 1.0)
    got = compiled(h.clone(), 0, 30, tok, ch, 1.0, 1.0)
    assert torch.equal(got, exp)
