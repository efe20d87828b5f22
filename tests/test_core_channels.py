"""Unit tests of stas_core.channels: parsing, validation, MA detection."""
import pytest
import torch

from stas_core.channels import MAX_CHANNELS, ChannelSelection, detect_ma_channels, ma_ratio, parse_channels


@pytest.mark.parametrize("text", ["auto", "AUTO", " auto ", "", None])
def test_auto(text):
    sel = parse_channels(text, threshold=30, top_k=2)
    assert sel.auto and sel.explicit is None and sel.threshold == 30.0 and sel.top_k == 2


@pytest.mark.parametrize("text,expect", [
    ("12", (12,)),
    ("12,407,1536", (12, 407, 1536)),
    ("407, 12 ,12", (12, 407)),     # sorted, unique
    ("3-5,9", (3, 4, 5, 9)),
    ("1;2", (1, 2)),
    ("7,", (7,)),
])
def test_explicit(text, expect):
    sel = parse_channels(text)
    assert not sel.auto and sel.explicit == expect


@pytest.mark.parametrize("text", ["abc", "1,x", "1.5", ",", " , "])
def test_unreadable_or_empty(text):
    with pytest.raises(ValueError, match="channels"):
        parse_channels(text)


def test_backwards_range_is_an_error_not_silently_dropped():
    with pytest.raises(ValueError, match="runs backwards; write it as 3-5"):
        parse_channels("1,5-3")


def test_validate_range_names_the_valid_range():
    parse_channels("0,127").validate(128)
    with pytest.raises(ValueError, match=r"\[128\].*valid 0-127.*auto"):
        parse_channels("5,128").validate(128)
    with pytest.raises(ValueError, match="out of range"):
        ChannelSelection((-1,)).validate(128)
    with pytest.raises(ValueError, match="channels: cannot read '-1'"):
        parse_channels("-1")
    with pytest.raises(ValueError, match="top_k"):
        ChannelSelection(None, 50.0, 0).validate(128)


def planted(b=2, n=40, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(b, n, d, generator=g)
    h[0, 3, 7] = 400.0     # a massive activation
    h[1, 9, 20] = -300.0   # another, negative, in the second sample only
    h[:, :, 11] += 5.0     # elevated everywhere but not massive
    return h


def test_explicit_list_and_top_k_are_capped():
    parse_channels(f"0-{MAX_CHANNELS - 1}").validate(4096)  # 64 is fine
    with pytest.raises(ValueError, match=f"65 channels listed, more than the {MAX_CHANNELS}.*'auto'"):
        parse_channels(f"0-{MAX_CHANNELS}").validate(4096)
    with pytest.raises(ValueError, match=f"top_k must lie in 1-{MAX_CHANNELS}"):
        parse_channels("auto", top_k=MAX_CHANNELS + 1).validate(4096)


def test_detect_nan_ratio_is_never_valid_and_inf_ranks_first():
    h = torch.randn(1, 50, 16)
    h[0, :, 3] = float("nan")       # a NaN anywhere makes the row's mean NaN: nothing is valid
    idx, ok, _ = detect_ma_channels(h, 2.0, 4)
    assert not ok.any() and ((idx >= 0) & (idx < 16)).all()
    h = torch.randn(2, 50, 16)
    h[1, :, 5] += 1e4
    h[0, 7, 9] = float("inf")       # row 0's ratios are NaN or 0; row 1 still finds channel 5
    idx, ok, _ = detect_ma_channels(h, 8.0, 2)   # channel 5: ratio about 16 (it dominates the mean too)
    assert idx[0].item() == 5 and ok[0] and not ok[1:].any()


def test_ma_ratio_is_peak_over_mean_of_whole_state():
    h = planted()
    r = ma_ratio(h)
    assert r.dtype == torch.float32 and r.shape == (32,)
    mean = h.abs().mean(dim=(1, 2))                       # per sample
    peak = h.abs().amax(dim=1)                            # [B, D]
    torch.testing.assert_close(r, (peak / mean[:, None]).amax(0))


def test_detect_finds_planted_channels_in_order():
    h = planted()
    idx, valid, ratio = detect_ma_channels(h, threshold=20.0, top_k=4)
    assert idx.dtype == torch.int64 and valid.dtype == torch.bool
    assert idx[:2].tolist() == [7, 20]
    assert valid.tolist() == [True, True, False, False]
    assert (ratio[:-1] >= ratio[1:]).all()


def test_detect_top_k_caps_and_threshold_filters():
    h = planted()
    idx, valid, _ = detect_ma_channels(h, threshold=20.0, top_k=1)
    assert idx.tolist() == [7] and valid.tolist() == [True]
    idx, valid, _ = detect_ma_channels(h, threshold=1e9, top_k=3)
    assert len(idx) == 3 and not valid.any()
    idx, _, _ = detect_ma_channels(h, threshold=1.0, top_k=100)  # top_k above D: all channels
    assert sorted(idx.tolist()) == list(range(32))


def test_detect_handles_all_zero_state():
    idx, valid, ratio = detect_ma_channels(torch.zeros(1, 4, 8), threshold=50.0, top_k=2)
    assert torch.isfinite(ratio).all() and not valid.any() and len(idx) == 2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_detect_low_precision(dtype):
    h = planted().to(dtype)
    idx, valid, ratio = detect_ma_channels(h, threshold=20.0, top_k=2)
    assert idx.tolist() == [7, 20] and valid.all() and ratio.dtype == torch.float32


def test_detect_traces_without_graph_breaks():
    f = torch.compile(lambda h: detect_ma_channels(h, 20.0, 2), backend="eager", fullgraph=True)
    idx, valid, _ = f(planted())
    assert idx.tolist() == [7, 20] and valid.all()


def test_detect_no_host_sync_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA for torch.cuda.set_sync_debug_mode")
    h = planted().cuda()
    torch.cuda.set_sync_debug_mode("error")
    try:
        idx, valid, _ = detect_ma_channels(h, threshold=20.0, top_k=2)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert idx.tolist() == [7, 20] and valid.all().item()
