"""The fast STAS hot path (stas_core.steer_fast, stas_core.steer_triton) against the op as stated
(stas_core.steer.steer_), on the CPU.

* the gated torch fallback (what runs wherever Triton does not) equals ``steer_`` bit for bit;
* the sigma window decided on the device equals ``SigmaWindow.contains`` exactly, bounds included;
* the Triton kernels, run by Triton's CPU interpreter in a subprocess (skipped where Triton is not
  installed), equal the fallback bit for bit (float16 / float32; bfloat16 within the interpreter's
  own rounding, see ``test_triton_kernels_match_fallback_in_interpreter``);
* dispatch takes the fallback on CPU tensors, and the custom op used under torch.compile traces
  into one graph with no break, no recompile when sigma, the run's tables or any per-run
  setting (alpha, window, threshold, mask) change, and the eager result;
* the hardening: NaN/Inf activations never yield a channel past the hidden size, invalid
  table entries are never used as indices, strided inputs are honoured.
"""
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from stas_core import steer_fast as fast
from stas_core.channels import detect_ma_channels
from stas_core.layout import BoundarySpec, steer_token_indices
from stas_core import schedule as S
from stas_core.schedule import SigmaWindow
from stas_core.steer import steer_

REPO = Path(__file__).resolve().parents[1]


def rand_h(b=2, l=90, d=24, seed=0, dtype=torch.float16, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, l, d, generator=g) * scale).to(dtype)


def tables(chans, valid=None):
    c = torch.tensor([chans], dtype=torch.long)
    v = torch.ones_like(c, dtype=torch.bool) if valid is None else torch.tensor([valid])
    return c, v, torch.zeros(1, dtype=torch.int32)


def mkcall(c, v, need, tok, blend, sigma, *, alpha=1.0, lo=-S.F32_MAX, hi=S.F32_MAX, threshold=50.0,
           detect=False, prefix=0, n_visual=80, n_tok=None, n_chans=None):
    """A SteerCall the way the patch builds one (tables may be wider than n_chans)."""
    tok = torch.as_tensor(tok)
    p = fast.StepParams(alpha, lo, hi, threshold, detect, prefix, n_visual,
                        tok.numel() if n_tok is None else n_tok, c.shape[-1] if n_chans is None else n_chans)
    return fast.SteerCall(c, v, need, tok, torch.as_tensor(blend, dtype=torch.float32),
                          torch.as_tensor(sigma, dtype=torch.float32), p.pack())


# -- window ---------------------------------------------------------------------------------

@pytest.mark.parametrize("x", [0.0, 1.0, 0.1, 1 / 3, 14.614641, 1e-30, -2.5, 1e38, 3.5e38, math.inf, -math.inf])
def test_f32_floor_is_largest_float32_below(x):
    y = S.f32_floor(x)
    if x > S.F32_MAX or x < -S.F32_MAX:     # clamped to the finite float32 range
        assert y == math.copysign(S.F32_MAX, x)
        return
    assert y <= x
    assert float(torch.tensor(y, dtype=torch.float32)) == y           # representable
    if abs(x) < S.F32_MAX:
        nxt = torch.nextafter(torch.tensor(y, dtype=torch.float32), torch.tensor(math.inf))
        assert float(nxt) > x


@pytest.mark.parametrize("start,end", [(0.0, 0.4), (0.2, 0.7), (0.0, 1.0), (0.5, 1.0)])
def test_window_bounds_agree_with_sigma_window(start, end):
    sig_of = lambda p: (1.0 - p) ** 2 * 14.6 + 1 / 3  # noqa: E731  (double-precision bounds)
    w = SigmaWindow.from_percents(start, end, sig_of)
    lo, hi = S.window_bounds(w)
    probes = [s for s in (w.sigma_start, w.sigma_end) if math.isfinite(s)] + [0.0, 1e-3, 7.0, 20.0, 1e30]
    for p in list(probes):
        t = torch.tensor(p, dtype=torch.float32)
        probes += [float(torch.nextafter(t, torch.tensor(math.inf))), float(torch.nextafter(t, torch.tensor(-math.inf)))]
    s32 = torch.tensor(probes, dtype=torch.float32)
    dev = ((s32 > lo) & (s32 <= hi)).tolist()
    host = [w.contains(float(s)) for s in s32]
    assert dev == host


# -- torch fallback == steer_ ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("lam,row_lam", [(1.0, [1.0, 0.0]), (1.0, [1.0, 1.0]), (0.5, [0.0, 0.5]), (0.37, [0.37, 0.37]),
                                         (0.0, [0.0, 0.0])])
def test_gated_fallback_equals_steer_(dtype, lam, row_lam):
    h = rand_h(dtype=dtype, seed=int(lam * 100))
    tok = torch.tensor([0, 1, 2, 9, 33, 70])
    c, v, need = tables([3, 11, 20], [True, False, True])
    rows = torch.tensor([i for i, x in enumerate(row_lam) if x])
    ref = h.clone()
    if rows.numel():
        steer_(ref, 5, 80, tok, c[0], 1.3, lam, samples=rows, valid=v[0])
    got = h.clone()
    fast.steer_block_(got, mkcall(c, v, need, tok, row_lam, [0.5], alpha=1.3, prefix=5), 0)
    assert torch.equal(got, ref)


def test_params_round_trip_and_padding_is_ignored():
    p = fast.StepParams(0.3, -1.5, 14.6, 20.0, True, 7, 32760, 1234, 5)
    assert fast.StepParams.unpack(p.pack()) == p and p.pack().device.type == "cpu"
    # tokens padded past n_tok and table columns past n_chans are never read or written
    h = rand_h()
    c, v, need = tables([1, 2, 0, 0], [True, True, True, True])
    tok = torch.tensor([0, 3, 5, 0, 0, 0])
    ref = h.clone()
    steer_(ref, 4, 80, tok[:3], c[0, :2], 0.7, 1.0)
    got = h.clone()
    fast.steer_block_(got, mkcall(c, v, need, tok, [1.0, 1.0], [0.5], alpha=0.7, prefix=4, n_tok=3, n_chans=2), 0)
    assert torch.equal(got, ref)


def test_vis_offset_adds_to_prefix():
    h = rand_h()
    c, v, need = tables([1, 2])
    tok = torch.arange(6)
    ref = h.clone()
    steer_(ref, 9, 80, tok, c[0], 1.0, 1.0)
    got = h.clone()
    fast.steer_block_(got, mkcall(c, v, need, tok, [1.0, 1.0], [0.5], prefix=4), 0, vis_offset=5)
    assert torch.equal(got, ref)


@pytest.mark.parametrize("kw", [dict(prefix=11), dict(n_visual=91), dict(n_tok=81), dict(n_chans=3), dict(n_chans=0)])
def test_geometry_outside_h_is_refused(kw):
    c, v, need = tables([1, 2])
    with pytest.raises(RuntimeError, match="STAS"):
        fast.steer_block_(rand_h(), mkcall(c, v, need, torch.arange(80), [1.0, 1.0], [0.5], **kw), 0)


def test_outside_window_and_zero_rows_are_untouched():
    h = rand_h()
    c, v, need = tables([1, 2])
    tok = torch.arange(10)
    for sigma, lo, hi, rl in ((0.5, 0.5, 1.0, [1.0, 1.0]),   # sigma == lo: outside (lo exclusive)
                              (1.5, 0.5, 1.0, [1.0, 1.0]),
                              (float("nan"), 0.5, 1.0, [1.0, 1.0]),
                              (0.7, 0.5, 1.0, [0.0, 0.0])):
        got = h.clone()
        fast.steer_block_(got, mkcall(c, v, need, tok, rl, [sigma, sigma], lo=lo, hi=hi), 0)
        assert torch.equal(got, h)
    got = h.clone()  # sigma == hi: inside
    fast.steer_block_(got, mkcall(c, v, need, tok, [1.0, 1.0], [1.0], lo=0.5, hi=1.0), 0)
    assert not torch.equal(got, h)


def test_table_row_pos_is_used():
    h = rand_h()
    c = torch.tensor([[1, 2], [7, 9]])
    v = torch.ones(2, 2, dtype=torch.bool)
    need = torch.zeros(2, dtype=torch.int32)
    tok = torch.arange(12)
    ref = h.clone()
    steer_(ref, 0, 80, tok, c[1], 1.0, 1.0)
    got = h.clone()
    fast.steer_block_(got, mkcall(c, v, need, tok, [1.0, 1.0], [0.5]), 1)
    assert torch.equal(got, ref)


# -- detection --------------------------------------------------------------------------------

def planted(seed=0, dtype=torch.float16):
    h = rand_h(b=2, l=400, d=64, seed=seed, dtype=torch.float32, scale=1.0)
    h[:, 40:, 7] += 300.0
    h[1, 40:, 33] -= 500.0
    h[0, 200, 50] = 9000.0
    return h.to(dtype)


def detect_call(c, v, need, row_lam, sigma, lo, hi):
    return mkcall(c, v, need, torch.zeros(1, dtype=torch.long), row_lam, sigma, lo=lo, hi=hi, detect=True,
                  prefix=40, n_visual=360, n_tok=0)


def test_gated_detection_runs_once_at_the_first_steered_call():
    h = planted()
    c = torch.zeros(2, 4, dtype=torch.long)
    v = torch.zeros(2, 4, dtype=torch.bool)
    need = torch.ones(2, dtype=torch.int32)
    lo, hi = 0.2, 0.8
    # not steered this call (sigma outside the window): nothing detected, flag kept
    fast.steer_block_(h, detect_call(c, v, need, [1.0, 0.0], [0.9], lo, hi), 1)
    assert need.tolist() == [1, 1] and c.abs().sum() == 0
    # steered: detected into row 1 only, flag cleared
    fast.steer_block_(h, detect_call(c, v, need, [1.0, 0.0], [0.5], lo, hi), 1)
    idx, ok, _ = detect_ma_channels(h[:, 40:], 50.0, 4)
    assert c[1].tolist() == idx.tolist() and v[1].tolist() == ok.tolist() and need.tolist() == [1, 0]
    assert c[0].abs().sum() == 0
    # later calls keep the run's channels even when the activations change
    fast.steer_block_(planted(seed=3) * 0, detect_call(c, v, need, [1.0, 0.0], [0.5], lo, hi), 1)
    assert c[1].tolist() == idx.tolist()


def test_steer_block_detects_then_steers():
    h = planted()
    c = torch.zeros(1, 3, dtype=torch.long)
    v = torch.zeros(1, 3, dtype=torch.bool)
    need = torch.ones(1, dtype=torch.int32)
    tok = steer_token_indices((4, 6, 15), BoundarySpec())
    got = h.clone()
    fast.steer_block_(got, mkcall(c, v, need, tok, [1.0, 0.0], [0.5], detect=True, prefix=40, n_visual=360), 0)
    idx, ok, _ = detect_ma_channels(h[:, 40:], 50.0, 3)
    ref = h.clone()
    steer_(ref, 40, 360, tok, idx, 1.0, 1.0, samples=torch.tensor([0]), valid=ok)
    assert torch.equal(got, ref)


@pytest.mark.parametrize("poison", ["nan_all", "nan_channel", "inf_channel", "zeros"])
def test_detection_with_nan_or_inf_stays_in_range(poison):
    h = planted(dtype=torch.float32)
    if poison == "nan_all":
        h[:] = float("nan")
    elif poison == "nan_channel":
        h[:, 40:, 12] = float("nan")
    elif poison == "inf_channel":
        h[0, 100, 20] = float("inf")
    else:
        h.zero_()
    c = torch.full((1, 4), -1, dtype=torch.long)
    v = torch.zeros(1, 4, dtype=torch.bool)
    need = torch.ones(1, dtype=torch.int32)
    fast.steer_block_(h, detect_call(c, v, need, [1.0, 1.0], [0.5], -1.0, 1.0), 0)
    assert ((c >= 0) & (c < h.shape[-1])).all() and need.item() == 0
    if poison == "nan_all":
        assert not v.any()
    if poison == "nan_channel":
        assert 12 not in c[0][v[0]].tolist()
    if poison == "inf_channel":  # the row's mean is Inf then: its ratios are NaN or 0, the other row decides
        assert set(c[0][v[0]].tolist()) <= {7, 33}


# -- dispatch and torch.compile ---------------------------------------------------------------

def test_cpu_takes_the_torch_fallback():
    assert not fast.uses_triton(torch.zeros(2, 3, 4))


def test_disable_env_turns_triton_off(monkeypatch):
    monkeypatch.setenv("STAS_DISABLE_TRITON", "1")
    fast.reset_backends()
    try:
        assert fast._triton_module() is None
    finally:
        monkeypatch.delenv("STAS_DISABLE_TRITON")
        fast.reset_backends()


class Ctx:
    """Stands for the patch's CallContext: an object in a dict, as transformer_options holds it."""

    def __init__(self, call):
        self.call = call


@pytest.mark.skipif(fast._OP is None, reason="torch.library.custom_op needs torch >= 2.4")
def test_compiled_call_one_graph_no_recompile_and_eager_result():
    import torch._dynamo
    from torch._dynamo.utils import counters

    def block(h, to):
        h = h * 1.0 + 0.0  # some graph around the op
        fast.steer_traced_(h, to["stas"].call, 0, 2)
        return h * 2.0

    torch._dynamo.reset()
    counters.clear()
    f = torch.compile(block, backend="aot_eager", fullgraph=True)  # fullgraph: a graph break would raise
    h = planted()[:, :90].contiguous()
    grid_tok = {  # two masks of one 80-token grid, padded to one length as the patch pads them
        "a": torch.tensor([0, 3, 5, 40] + [0] * 76), "b": torch.tensor([1, 2, 60, 61, 62, 79] + [0] * 74)}

    def to(sigma, alpha, lo, hi, threshold, mask, auto):
        n = 4 if mask == "a" else 6
        if auto:
            c, v, need = torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.bool), torch.ones(1, dtype=torch.int32)
        else:
            c, v, need = torch.tensor([[7, 33, 0, 0, 0, 0, 0, 0]]), torch.ones(1, 8, dtype=torch.bool), torch.zeros(1, dtype=torch.int32)
        return {"stas": Ctx(mkcall(c, v, need, grid_tok[mask], [1.0, 0.0], [sigma], alpha=alpha, lo=lo, hi=hi,
                                   threshold=threshold, detect=auto, prefix=3, n_tok=n, n_chans=4 if auto else 2))}

    # sigma in/out of the window, then every per-run setting changed between calls
    cases = [(0.5, 1.0, 0.2, 0.8, 50.0, "a", True), (0.9, 1.0, 0.2, 0.8, 50.0, "a", True),
             (0.5, 0.3, 0.2, 0.8, 50.0, "a", True), (0.9, 0.3, 0.1, 1.0, 50.0, "a", True),
             (0.5, 1.0, 0.2, 0.8, 5000.0, "a", True), (0.5, 1.0, 0.2, 0.8, 50.0, "b", True),
             (0.5, 0.5, 0.2, 0.8, 50.0, "b", False), (0.15, 0.5, 0.1, 0.8, 50.0, "a", False)]
    for case in cases:
        a, b = to(*case), to(*case)
        got = f(h.clone(), a)
        want = block(h.clone(), b)
        assert torch.equal(got, want), case
        assert torch.equal(a["stas"].call.chans, b["stas"].call.chans)
        assert torch.equal(a["stas"].call.need, b["stas"].call.need)
    assert counters["stats"]["unique_graphs"] == 1


# -- the Triton kernels, in Triton's CPU interpreter -------------------------------------------

def _has_triton():
    try:
        import triton  # noqa: F401
        return True
    except Exception:  # noqa: BLE001
        return False


INTERPRETER_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["TRITON_INTERPRET"] = "1"
    sys.path.insert(0, sys.argv[1])
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def _probe(x_ptr, n, B: tl.constexpr):  # a runtime-bound loop: some Triton/numpy pairs can't interpret it
        acc = tl.zeros([B], dtype=tl.float32)
        for c0 in range(0, n, B):
            acc += tl.load(x_ptr + c0 + tl.arange(0, B), mask=(c0 + tl.arange(0, B)) < n, other=0.0)
        tl.store(x_ptr + tl.arange(0, B), acc)
    try:
        _probe[(1,)](torch.zeros(8), 8, B=4)
    except Exception as e:
        print("INTERPRETER BROKEN", triton.__version__, repr(e))
        sys.exit(3)
    from stas_core import steer_triton as T
    from stas_core import steer_fast as F
    from stas_core.schedule import ALWAYS
    from stas_core.layout import BoundarySpec, steer_token_indices
    bad = []

    def view(h, c, v, need, tok, rl, sig, pos, prefix, n_vis, lo, hi, alpha=1.3, detect=False, n_chans=None, th=50.0):
        p = F.StepParams(alpha, lo, hi, th, detect, prefix, n_vis, tok.numel(), c.shape[-1] if n_chans is None else n_chans)
        call = F.SteerCall(c, v, need, tok, torch.as_tensor(rl), torch.as_tensor(sig), p.pack())
        return F.view_of(h, call, p, pos, 0)

    g = torch.Generator().manual_seed(0)
    grid = (3, 5, 9)
    tok = steer_token_indices(grid, BoundarySpec(head=2.0, tail=1.0))
    N = 3 * 5 * 9
    for dtype in (torch.float16, torch.float32, torch.bfloat16):
        for lam, rl, sig, lo, hi in ((1.0, [1.0, 0.0], 0.5, 0.1, 0.9), (0.5, [0.5, 0.5], 0.5, 0.1, 0.9),
                                     (0.25, [0.0, 0.25], 0.9, 0.1, 0.9), (1.0, [1.0, 1.0], 0.1, 0.1, 0.9),
                                     (0.75, [0.75, 0.75], 0.5, *ALWAYS)):
            h = (torch.randn(2, N + 7, 40, generator=g) * 4).to(dtype)
            chans = torch.tensor([[1, 2, 3], [3, 17, 39]])
            valid = torch.tensor([[True, True, True], [True, False, True]])
            a, b = h.clone(), h.clone()
            need = torch.zeros(2, dtype=torch.int32)
            T.steer_triton_(view(a, chans, valid, need, tok, rl, [sig, sig], 1, 7, N, lo, hi))
            F.steer_torch_(view(b, chans, valid, need, tok, rl, [sig, sig], 1, 7, N, lo, hi))
            if dtype == torch.bfloat16:
                # the interpreter rounds float32 -> bfloat16 ties downward (CUDA rounds to nearest even):
                # allow one bfloat16 step, nothing more
                ok = ((a.float() - b.float()).abs() <= b.float().abs() * 2 ** -7).all().item()
            else:
                ok = torch.equal(a, b)
            if not ok:
                bad.append(("steer", str(dtype), lam))
    # hardening: an invalid table entry holding an index far past the hidden size is never read;
    # strided sigma / row_lam / tokens and tables wider than n_chans are honoured
    h = torch.randn(2, N + 7, 40, generator=g)
    chans = torch.tensor([[5, 10**9, 2, 7, 10**9, 0, 0, 0]])
    valid = torch.tensor([[True, False, True, False, False, False, False, False]])
    sig = torch.tensor([[0.5, 9.0], [0.5, 9.0]]).t()[0]           # non-contiguous [0.5, 0.5]
    rl = torch.tensor([1.0, 7.0, 1.0])[::2]                         # non-contiguous [1.0, 1.0]
    tk = torch.stack([tok, tok]).t()[:, 0]                          # non-contiguous tokens
    a, b = h.clone(), h.clone()
    need = torch.zeros(1, dtype=torch.int32)
    T.steer_triton_(view(a, chans, valid, need, tk, rl, sig, 0, 7, N, -1.0, 1.0, n_chans=5))
    sane = torch.tensor([[5, 30, 2, 7, 31, 0, 0, 0]])  # torch bounds-checks every index: no garbage there
    F.steer_torch_(view(b, sane, valid, need, tok.clone(), [1.0, 1.0], [0.5, 0.5], 0, 7, N, -1.0, 1.0, n_chans=5))
    if not torch.equal(a, b) or torch.equal(a, h):
        bad.append(("hardening-steer",))
    for K in (4, 3, 1):
        h = torch.randn(2, 700, 96, generator=g).to(torch.float16)
        h[:, 100:, 7] += 300; h[1, 100:, 33] -= 500; h[0, 500, 60] = 9000
        outs = []
        for fn in (T.detect_triton_, F.detect_torch_):
            c = torch.zeros(2, 8, dtype=torch.long); v = torch.zeros(2, 8, dtype=torch.bool)
            n = torch.ones(2, dtype=torch.int32)
            fn(view(h, c, v, n, tok, [1.0, 0.0], [0.5], 1, 100, 600, *ALWAYS, detect=True, n_chans=K))
            fn(view(h * 0, c, v, n, tok, [1.0, 0.0], [0.5], 0, 100, 600, 0.6, 0.9, detect=True, n_chans=K))
            outs.append((c.tolist(), v.tolist(), n.tolist()))
        if outs[0] != outs[1]:
            bad.append(("detect", K, outs))
    # NaN / Inf activations: detection stays within the hidden size and marks NaN channels invalid
    for poison in ("nan_all", "nan_channel", "inf"):
        h = torch.randn(2, 700, 96, generator=g)
        h[:, 100:, 7] += 300
        if poison == "nan_all":
            h[:] = float("nan")
        elif poison == "nan_channel":
            h[:, 100:, 95] = float("nan")
        else:
            h[1, 300, 40] = float("inf")
        c = torch.full((1, 4), -1, dtype=torch.long); v = torch.zeros(1, 4, dtype=torch.bool)
        n = torch.ones(1, dtype=torch.int32)
        T.detect_triton_(view(h, c, v, n, tok, [1.0, 1.0], [0.5], 0, 100, 600, *ALWAYS, detect=True))
        inside = ((c >= 0) & (c < 96)).all().item()
        nan_ok = poison != "nan_channel" or 95 not in c[0][v[0]].tolist()
        all_ok = poison != "nan_all" or not v.any().item()
        if not (inside and nan_ok and all_ok and n.item() == 0):
            bad.append(("nan", poison, c.tolist(), v.tolist()))
    print("BAD", bad)
    sys.exit(1 if bad else 0)
""")


@pytest.mark.skipif(not _has_triton(), reason="Triton is not installed in this python: this test runs the Triton kernels in Triton's CPU interpreter and compares them with the torch fallback; install triton to run it")
def test_triton_kernels_match_fallback_in_interpreter(tmp_path):
    script = tmp_path / "interp.py"
    script.write_text(INTERPRETER_SCRIPT)
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run([sys.executable, str(script), str(REPO)], capture_output=True, text=True, env=env,
                       timeout=600)
    if r.returncode == 3:
        pytest.skip("Triton's CPU interpreter cannot run here: " + r.stdout.strip()[-200:])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.skipif(fast._OP is None, reason="torch.library.custom_op needs torch >= 2.4")
def test_compiled_block_equals_eager_and_reads_settings_from_tensors():
    """A compiled block call is the eager call, and new settings (tensors) reuse the one graph."""
    import dataclasses
    import torch._dynamo
    from torch._dynamo.utils import counters

    def block(h, call):
        h = h * 1.0
        fast.steer_traced_(h, call, 1, 2)  # slot 1, video from token 2
        return h

    torch._dynamo.reset()
    f = torch.compile(block, backend="aot_eager", fullgraph=True)
    h = planted()[:, :90].contiguous()
    c = torch.tensor([[7, 33, 0, 0], [50, 0, 0, 0]])
    v = torch.tensor([[True, True, False, False], [True, False, False, False]])
    base = mkcall(c, v, torch.zeros(2, dtype=torch.int32), torch.arange(80), [1.0, 1.0], [0.5], prefix=3)
    graphs = None
    for blend in ([1.0, 1.0], [0.3, 0.0], [0.0, 0.0]):
        call = dataclasses.replace(base, blend=torch.tensor(blend))
        got = f(h.clone(), call)
        want = h.clone()
        fast.steer_block_(want, call, 1, 2)
        assert torch.equal(got, want), blend
        assert torch.equal(got, h) == (blend == [0.0, 0.0]), blend
        graphs = graphs or counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == graphs
