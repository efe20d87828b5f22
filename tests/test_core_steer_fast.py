"""The fast STAS hot path (stas_core.steer_fast, stas_core.steer_triton) against the op as stated
(stas_core.steer.steer_), on the CPU.

* the gated torch fallback (what runs wherever Triton does not) equals ``steer_`` bit for bit;
* the sigma window decided on the device equals ``SigmaWindow.contains`` exactly, bounds included;
* the Triton kernels, run by Triton's CPU interpreter in a subprocess (skipped where Triton is not
  installed), equal the fallback bit for bit (float16 / float32; bfloat16 within the interpreter's
  own rounding, see ``test_triton_kernels_match_fallback_in_interpreter``);
* dispatch takes the fallback on CPU tensors, and the custom op used under torch.compile traces
  into one graph with no break, no recompile when sigma or the run's tables change, and the
  eager result.
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


# -- window ---------------------------------------------------------------------------------

@pytest.mark.parametrize("x", [0.0, 1.0, 0.1, 1 / 3, 14.614641, 1e-30, -2.5, 1e38, 3.5e38, math.inf, -math.inf])
def test_f32_floor_is_largest_float32_below(x):
    y = fast.f32_floor(x)
    if x > fast.F32_MAX or x < -fast.F32_MAX:     # clamped to the finite float32 range
        assert y == math.copysign(fast.F32_MAX, x)
        return
    assert y <= x
    assert float(torch.tensor(y, dtype=torch.float32)) == y           # representable
    if abs(x) < fast.F32_MAX:
        nxt = torch.nextafter(torch.tensor(y, dtype=torch.float32), torch.tensor(math.inf))
        assert float(nxt) > x


@pytest.mark.parametrize("start,end", [(0.0, 0.4), (0.2, 0.7), (0.0, 1.0), (0.5, 1.0)])
def test_window_bounds_agree_with_sigma_window(start, end):
    sig_of = lambda p: (1.0 - p) ** 2 * 14.6 + 1 / 3  # noqa: E731  (double-precision bounds)
    w = SigmaWindow.from_percents(start, end, sig_of)
    lo, hi = fast.window_bounds(w)
    probes = [w.sigma_start, w.sigma_end, 0.0, 1e-3, 7.0, 20.0]
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
        steer_(ref, 5, 80, tok, c[0], 1.3, lam, rows=rows, valid=v[0])
    got = h.clone()
    fast.steer_block_(got, c, v, need, 0, tok, torch.tensor(row_lam), torch.tensor([0.5]), 5, 80, *fast.ALWAYS,
                      1.3, 50.0, False)
    assert torch.equal(got, ref)


def test_outside_window_and_zero_rows_are_untouched():
    h = rand_h()
    c, v, need = tables([1, 2])
    tok = torch.arange(10)
    for sigma, lo, hi, rl in ((0.5, 0.5, 1.0, [1.0, 1.0]),   # sigma == lo: outside (lo exclusive)
                              (1.5, 0.5, 1.0, [1.0, 1.0]),
                              (0.7, 0.5, 1.0, [0.0, 0.0])):
        got = h.clone()
        fast.steer_block_(got, c, v, need, 0, tok, torch.tensor(rl), torch.tensor([sigma, sigma]), 0, 80, lo, hi,
                          1.0, 50.0, False)
        assert torch.equal(got, h)
    got = h.clone()  # sigma == hi: inside
    fast.steer_block_(got, c, v, need, 0, tok, torch.tensor([1.0, 1.0]), torch.tensor([1.0]), 0, 80, 0.5, 1.0,
                      1.0, 50.0, False)
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
    fast.steer_block_(got, c, v, need, 1, tok, torch.ones(2), torch.tensor([0.5]), 0, 80, *fast.ALWAYS, 1.0, 50.0,
                      False)
    assert torch.equal(got, ref)


# -- detection --------------------------------------------------------------------------------

def planted(seed=0, dtype=torch.float16):
    h = rand_h(b=2, l=400, d=64, seed=seed, dtype=torch.float32, scale=1.0)
    h[:, 40:, 7] += 300.0
    h[1, 40:, 33] -= 500.0
    h[0, 200, 50] = 9000.0
    return h.to(dtype)


def test_gated_detection_runs_once_at_the_first_steered_call():
    h = planted()
    c = torch.zeros(2, 4, dtype=torch.long)
    v = torch.zeros(2, 4, dtype=torch.bool)
    need = torch.ones(2, dtype=torch.int32)
    lo, hi = 0.2, 0.8
    # not steered this call (sigma outside the window): nothing detected, flag kept
    fast.detect_gated_(h, 40, 360, c, v, need, 1, torch.tensor([1.0, 0.0]), torch.tensor([0.9]), lo, hi, 50.0)
    assert need.tolist() == [1, 1] and c.abs().sum() == 0
    # steered: detected into row 1 only, flag cleared
    fast.detect_gated_(h, 40, 360, c, v, need, 1, torch.tensor([1.0, 0.0]), torch.tensor([0.5]), lo, hi, 50.0)
    idx, ok, _ = detect_ma_channels(h[:, 40:], 50.0, 4)
    assert c[1].tolist() == idx.tolist() and v[1].tolist() == ok.tolist() and need.tolist() == [1, 0]
    assert c[0].abs().sum() == 0
    # later calls keep the run's channels even when the activations change
    fast.detect_gated_(planted(seed=3) * 0, 40, 360, c, v, need, 1, torch.tensor([1.0, 0.0]), torch.tensor([0.5]),
                       lo, hi, 50.0)
    assert c[1].tolist() == idx.tolist()


def test_steer_block_detects_then_steers():
    h = planted()
    c = torch.zeros(1, 3, dtype=torch.long)
    v = torch.zeros(1, 3, dtype=torch.bool)
    need = torch.ones(1, dtype=torch.int32)
    tok = steer_token_indices((4, 6, 15), BoundarySpec())
    got = h.clone()
    fast.steer_block_(got, c, v, need, 0, tok, torch.tensor([1.0, 0.0]), torch.tensor([0.5]), 40, 360,
                      *fast.ALWAYS, 1.0, 50.0, True)
    idx, ok, _ = detect_ma_channels(h[:, 40:], 50.0, 3)
    ref = h.clone()
    steer_(ref, 40, 360, tok, idx, 1.0, 1.0, rows=torch.tensor([0]), valid=ok)
    assert torch.equal(got, ref)


# -- dispatch and torch.compile ---------------------------------------------------------------

def test_cpu_takes_the_torch_fallback():
    assert not fast.uses_triton(torch.zeros(2, 3, 4))


def test_disable_env_turns_triton_off(monkeypatch):
    monkeypatch.setenv("STAS_DISABLE_TRITON", "1")
    fast._triton_module.cache_clear()
    try:
        assert fast._triton_module() is None
    finally:
        monkeypatch.delenv("STAS_DISABLE_TRITON")
        fast._triton_module.cache_clear()


@pytest.mark.skipif(fast._OP is None, reason="torch.library.custom_op needs torch >= 2.4")
def test_compiled_call_one_graph_no_recompile_and_eager_result():
    import torch._dynamo
    from torch._dynamo.utils import counters

    tok = torch.tensor([0, 3, 5, 40])
    lo, hi = 0.2, 0.8

    def block(h, ctx):
        h = h * 1.0 + 0.0  # some graph around the op
        fast.steer_block(h, ctx["chans"], ctx["valid"], ctx["need"], 0, tok, ctx["row_lam"], ctx["sigma"], 5, 80, lo,
                         hi, 1.0, 50.0, True)
        return h * 2.0

    torch._dynamo.reset()
    counters.clear()
    f = torch.compile(block, backend="aot_eager", fullgraph=True)  # fullgraph: a graph break would raise

    def ctx(sigma):
        return dict(chans=torch.zeros(1, 4, dtype=torch.long), valid=torch.zeros(1, 4, dtype=torch.bool),
                    need=torch.ones(1, dtype=torch.int32), row_lam=torch.tensor([1.0, 0.0]),
                    sigma=torch.tensor([sigma]))

    h = planted()[:, :90].contiguous()
    for sigma in (0.5, 0.9, 0.3, 0.1):  # in, out, in, out of the window; fresh tables every call
        a, b = ctx(sigma), ctx(sigma)
        got = f(h.clone(), a)
        want = block(h.clone(), b)
        assert torch.equal(got, want)
        assert torch.equal(a["chans"], b["chans"]) and torch.equal(a["need"], b["need"])
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
    from stas_core.layout import BoundarySpec, steer_token_indices
    bad = []
    g = torch.Generator().manual_seed(0)
    grid = (3, 5, 9)
    tok = steer_token_indices(grid, BoundarySpec(head=2.0, tail=1.0))
    N = 3 * 5 * 9
    for dtype in (torch.float16, torch.float32, torch.bfloat16):
        for lam, rl, sig, lo, hi in ((1.0, [1.0, 0.0], 0.5, 0.1, 0.9), (0.5, [0.5, 0.5], 0.5, 0.1, 0.9),
                                     (0.25, [0.0, 0.25], 0.9, 0.1, 0.9), (1.0, [1.0, 1.0], 0.1, 0.1, 0.9),
                                     (0.75, [0.75, 0.75], 0.5, *F.ALWAYS)):
            h = (torch.randn(2, N + 7, 40, generator=g) * 4).to(dtype)
            chans = torch.tensor([[1, 2, 3], [3, 17, 39]])
            valid = torch.tensor([[True, True, True], [True, False, True]])
            a, b = h.clone(), h.clone()
            args = (7, N, tok, chans, valid, 1, torch.tensor(rl), torch.tensor([sig, sig]), lo, hi, 1.3)
            T.steer_triton_(a, *args)
            F.steer_gated_torch_(b, *args)
            if dtype == torch.bfloat16:
                # the interpreter rounds float32 -> bfloat16 ties downward (CUDA rounds to nearest even):
                # allow one bfloat16 step, nothing more
                ok = ((a.float() - b.float()).abs() <= b.float().abs() * 2 ** -7).all().item()
            else:
                ok = torch.equal(a, b)
            if not ok:
                bad.append(("steer", str(dtype), lam))
    for K in (4, 3, 1):
        h = torch.randn(2, 700, 96, generator=g).to(torch.float16)
        h[:, 100:, 7] += 300; h[1, 100:, 33] -= 500; h[0, 500, 60] = 9000
        outs = []
        for fn in (T.detect_triton_, F.detect_gated_torch_):
            c = torch.zeros(2, K, dtype=torch.long); v = torch.zeros(2, K, dtype=torch.bool)
            n = torch.ones(2, dtype=torch.int32)
            fn(h, 100, 600, c, v, n, 1, torch.tensor([1.0, 0.0]), torch.tensor([0.5]), *F.ALWAYS, 50.0)
            fn(h * 0, 100, 600, c, v, n, 0, torch.tensor([1.0, 0.0]), torch.tensor([0.5]), 0.6, 0.9, 50.0)
            outs.append((c.tolist(), v.tolist(), n.tolist()))
        if outs[0] != outs[1]:
            bad.append(("detect", K, outs))
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
