"""STAS under sequence parallelism (stas_core.shard) on 2 and 4 gloo ranks, against one process.

Each case lays a block output out as raylight's USP forwards do (zero-padded at the end to a multiple
of the world size, rank r holds chunk r), steers every rank's slice with ``steer_shard_``, gathers,
and requires the result to equal ``steer_fast.steer_block_`` on the whole output bit for bit (fp32),
with the same channel tables after auto detection, and exactly one all-reduce per block call.
Layouts: Wan (reference tokens before the video, context latents after), HunyuanVideo single-stream
(text first, long enough that some rank holds no video token); batch 2 with CFG (cond row only),
cfg 1 (every row), a boundaries-only mask, a window that excludes the call, blend and alpha below 1.
"""
import pytest
import torch

from stas_core import shard as S
from stas_core import steer_fast as fast
from stas_core.layout import BoundarySpec, steer_token_indices
from stas_harness.ranks import gather, pad_chunk, run_ranks

BIG = 1e30

# name, grid, tokens before the video (vis_offset + prefix), tokens after, batch, blends, explicit channels, mask
CASES = [
    ("wan_t2v_cfg", (3, 3, 5), 0, 0, 2, [1.0, 0.0], None, BoundarySpec()),
    ("wan_fun_ref_context", (4, 2, 3), 6, 5, 1, [1.0], (3, 11), BoundarySpec()),
    ("hunyuan_single_cfg1_batch2_boundaries", (3, 3, 4), 13, 0, 2, [1.0, 1.0], None,
     BoundarySpec(first_frame=False)),
    ("hunyuan_single_long_text", (2, 2, 3), 40, 0, 1, [1.0], None, BoundarySpec()),
    ("blend_alpha", (3, 2, 5), 3, 2, 2, [0.5, 0.0], (3, 11, 17), BoundarySpec(head=1, tail=0)),
]
D = 32
MA = (3, 11)  # planted massive-activation channels


def block_output(seed: int, b: int, length: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(b, length, D, generator=g)
    for c, sign in zip(MA, (1.0, -1.0)):  # spikes at about one token in ten, elevated elsewhere
        spikes = (torch.rand(b, length, generator=g) < 0.1) * 300.0 * torch.rand(b, length, generator=g)
        h[:, :, c] += sign * (3.0 + spikes)
    return h


def make_call(grid, explicit, blend, spec, detect, before, sigma=0.5, alpha=1.0):
    tok = steer_token_indices(grid, spec)
    k = len(explicit) if explicit else 4
    chans = torch.zeros(1, k, dtype=torch.long)
    valid = torch.zeros(1, k, dtype=torch.bool)
    need = torch.ones(1, dtype=torch.int32)
    if explicit:
        chans[0] = torch.tensor(explicit)
        valid[:] = True
        need[:] = 0
    n_vis = grid[0] * grid[1] * grid[2]
    p = fast.StepParams(alpha, 0.1, 0.9, 50.0, detect, before, n_vis, tok.numel(), k)
    return fast.SteerCall(chans, valid, need, tok, torch.tensor(blend, dtype=torch.float32),
                          torch.full((len(blend),), sigma), p.pack()), p


def clone_call(c):
    return fast.SteerCall(c.chans.clone(), c.valid.clone(), c.need.clone(), c.token_idx, c.blend, c.sigma, c.params)


class CountingShard(S.Shard):
    calls = 0

    def all_reduce_max_(self, t):
        self.calls += 1
        return super().all_reduce_max_(t)


def ranks_agree_with_one_process(rank, world):
    """Every case on this rank; rank 0 returns [(case, what differs)] (empty: all equal)."""
    bad = []
    for i, (name, grid, before, after, b, blend, explicit, spec) in enumerate(CASES):
        n_vis = grid[0] * grid[1] * grid[2]
        length = before + n_vis + after
        one, sh = None, CountingShard(None, rank, world)
        for step, (sigma, alpha) in enumerate([(0.5, 1.0), (0.5, 0.8), (0.95, 1.0)]):  # detect, steer, outside
            call, p = make_call(grid, explicit, blend, spec, explicit is None and step == 0, before, sigma, alpha)
            if one is None:
                one, mine = clone_call(call), clone_call(call)
            else:  # the run's tables carry over from the detecting call
                one = fast.SteerCall(one.chans, one.valid, one.need, call.token_idx, call.blend, call.sigma, call.params)
                mine = fast.SteerCall(mine.chans, mine.valid, mine.need, call.token_idx, call.blend, call.sigma,
                                      call.params)
            h = block_output(100 * i + step, b, length)
            want = h.clone()
            fast.steer_block_(want, one, 0, 0)
            local = pad_chunk(h, world, rank)
            before_calls = sh.calls
            S.steer_shard_(local, sh, mine, p, 0, 0, key=grid)
            got = gather(local, length)
            tag = f"{name} step {step}"
            if sh.calls - before_calls != 1:
                bad.append((tag, f"{sh.calls - before_calls} all-reduces"))
            if not torch.equal(got, want):
                diff = (got - want).abs()
                bad.append((tag, f"output differs at {int((diff > 0).sum())} values, max {float(diff.max()):.3g}"))
            for t in ("chans", "valid", "need"):
                if not torch.equal(getattr(one, t), getattr(mine, t)):
                    bad.append((tag, f"{t}: {getattr(mine, t).tolist()} vs one process {getattr(one, t).tolist()}"))
            if step < 2 and torch.equal(want, h):
                bad.append((tag, "one-process STAS changed nothing: the case tests nothing"))
            if step == 2 and not torch.equal(got, h):
                bad.append((tag, "a call outside the window changed the output"))
        if explicit is None and not set(MA) <= set(one.chans[0][one.valid[0]].tolist()):
            bad.append((name, f"auto detection found {one.chans[0][one.valid[0]].tolist()}, not the planted {MA}"))
    return bad if rank == 0 else None


@pytest.mark.parametrize("world", [2, 4])
def test_sharded_steer_equals_one_process(world):
    torch.set_num_threads(1)
    bad = run_ranks(world, ranks_agree_with_one_process, start="fork")[0]
    assert bad == []


@pytest.mark.parametrize("n_local,rank,vis_start,n_vis,want", [
    (10, 0, 3, 12, (3, 7, 0)),     # video starts inside rank 0's slice
    (10, 1, 3, 12, (0, 5, 7)),     # and ends inside rank 1's
    (10, 2, 3, 12, (0, 0, 0)),     # rank 2 holds padding / trailing tokens only
    (13, 0, 40, 12, (0, 0, 0)),    # text only
    (13, 3, 40, 12, (1, 12, 0)),
])
def test_slice_geometry(n_local, rank, vis_start, n_vis, want):
    assert S.slice_geometry(n_local, rank, vis_start, n_vis) == want


def test_local_tokens_relative_to_the_slice():
    tok = torch.tensor([0, 1, 2, 9, 10, 11, 20])
    assert S.local_tokens(tok, 9, 3).tolist() == [0, 1, 2]
    assert S.local_tokens(tok, 3, 5).tolist() == []


INTERPRETER_SCRIPT = r'''
import sys
sys.path.insert(0, sys.argv[1])
import torch
try:
    from stas_core import steer_triton as tk
except Exception as e:
    print("no triton:", e)
    sys.exit(3)
from stas_core import steer_fast as fast
from stas_core.shard import _local_peak
from stas_core.steer import steer_samples_
bad = []
for dtype in (torch.float32, torch.float16):
    g = torch.Generator().manual_seed(0)
    h = (torch.randn(2, 70, 32, generator=g) * 3).to(dtype)
    h[:, :, 5] += 50
    chans = torch.zeros(1, 8, dtype=torch.long)
    chans[0, :3] = torch.tensor([5, 9, 30])
    valid = torch.zeros(1, 8, dtype=torch.bool)
    valid[0, :3] = torch.tensor([True, False, True])
    tok = torch.tensor([0, 1, 2, 17, 40, 44])
    for alpha, blend in ((1.0, [1.0, 0.0]), (1.0, [0.4, 1.0]), (0.9, [1.0, 1.0])):
        p = fast.StepParams(alpha, 0.1, 0.9, 50.0, False, 0, 50, tok.numel(), 3)
        call = fast.SteerCall(chans, valid, torch.zeros(1, dtype=torch.int32), tok, torch.tensor(blend),
                              torch.tensor([0.5]), p.pack())
        view = lambda x: fast.BlockView(x, call, p, 0, 7)
        on = torch.tensor(blend) != 0
        m = tk.peak_triton(view(h))
        if not torch.equal(m[on][:, [0, 2]], _local_peak(view(h), False)[on][:, [0, 2]]):
            bad.append(("peak", str(dtype), blend))
        a, b = h.clone(), h.clone()
        tk.steer_triton_(view(a))
        tk.steer_peak_triton_(view(b), m)
        if not torch.equal(a, b):
            bad.append(("split launch vs steer_triton_", str(dtype), blend))
        if alpha == 1.0:
            c = h.clone()
            steer_samples_(c, 7, 50, tok, chans[0, :3], valid[0, :3], torch.tensor(blend), alpha, peak=m)
            if not torch.equal(b, c):
                bad.append(("vs steer_samples_", str(dtype), blend))
print("BAD", bad)
sys.exit(1 if bad else 0)
'''


def test_triton_launches_with_a_given_max_in_interpreter(tmp_path):
    """The GPU path's two launches with M from outside (peak_triton, steer_peak_triton_) equal
    steer_triton_ and the torch op bit for bit, run by Triton's CPU interpreter (skipped without Triton)."""
    import importlib.util
    import os
    import subprocess
    import sys
    if importlib.util.find_spec("triton") is None:
        pytest.skip("Triton is not installed in this python (the testbeds have it)")
    script = tmp_path / "interp.py"
    script.write_text(INTERPRETER_SCRIPT)
    repo = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    r = subprocess.run([sys.executable, str(script), repo], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "TRITON_INTERPRET": "1"})
    if r.returncode == 3:
        pytest.skip("Triton's CPU interpreter cannot run here: " + r.stdout.strip()[-200:])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
