"""Sequence parallelism on the CPU: ``run_ranks`` spawns N torch.distributed ranks (gloo; NCCL on
GPUs for the bench), and ``pad_chunk`` / ``gather`` lay tokens out as raylight's USP forwards do
(pad the sequence at its end to a multiple of the world size, rank r keeps chunk r; all-gather
and trim after the blocks). Used by tests/test_core_shard.py, tests/test_integration_ray.py and
bench/bench_usp.py; ``target`` functions live in importable modules (spawned processes import them).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import tempfile
import traceback
from typing import Any, Callable, List

import torch


def pad_chunk(x: torch.Tensor, world: int, rank: int, dim: int = 1) -> torch.Tensor:
    """This rank's chunk of ``x`` zero-padded along ``dim`` to a multiple of ``world`` (a copy)."""
    pad = (world - x.shape[dim] % world) % world
    if pad:
        shape = list(x.shape)
        shape[dim] = pad
        x = torch.cat([x, x.new_zeros(shape)], dim=dim)
    return torch.chunk(x, world, dim=dim)[rank].clone()


def gather(x: torch.Tensor, length: int, group=None, dim: int = 1) -> torch.Tensor:
    """All ranks' chunks concatenated along ``dim`` and trimmed to ``length`` (None: not trimmed)."""
    import torch.distributed as dist
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    out = torch.cat(parts, dim=dim)
    return out if length is None else out.narrow(dim, 0, length)


def _entry(rank: int, world: int, store: str, backend: str, target: Callable, args: tuple, q) -> None:
    try:
        import torch.distributed as dist
        torch.set_num_threads(1)
        if backend == "nccl":
            torch.cuda.set_device(rank)
        dist.init_process_group(backend, init_method=f"file://{store}", rank=rank, world_size=world)
        out = target(rank, world, *args)
        dist.barrier()
        dist.destroy_process_group()
        q.put((rank, True, out))
    except BaseException:  # report it to the parent, which raises
        q.put((rank, False, traceback.format_exc()))


def run_ranks(world: int, target: Callable, *args: Any, backend: str = "gloo", timeout: float = 120.0,
              start: str = "spawn") -> List[Any]:
    """``target(rank, world, *args)`` in ``world`` new processes (``start``: spawn, or fork to inherit
    what this process imported) inside one process group; the return values by rank (plain Python
    values). Raises with the rank's traceback if one fails."""
    ctx = mp.get_context(start)
    q = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        procs = [ctx.Process(target=_entry, args=(r, world, store, backend, target, args, q), daemon=True)
                 for r in range(world)]
        for p in procs:
            p.start()
        got, errors = {}, []
        try:
            for _ in range(world):
                rank, ok, out = q.get(timeout=timeout)
                if ok:
                    got[rank] = out
                else:
                    errors.append(f"rank {rank}:\n{out}")
                    break
        except queue.Empty:
            errors.append(f"no answer from ranks {sorted(set(range(world)) - set(got))} within {timeout:g} s")
        finally:
            for p in procs:
                p.join(timeout=10 if not errors else 1)
                if p.is_alive():
                    p.kill()
                    p.join()
    if errors:
        raise RuntimeError("\n".join(errors))
    return [got[r] for r in range(world)]


def install_xfuser_standin() -> None:
    """``xfuser.core.distributed``'s three sequence-parallel queries that raylight's USP forwards and
    STAS Model Patch (Ray) use, over the default torch.distributed group (xfuser itself needs CUDA
    attention kernels)."""
    import sys
    import types

    import torch.distributed as dist
    m = types.ModuleType("xfuser.core.distributed")
    m.get_sequence_parallel_world_size = dist.get_world_size
    m.get_sequence_parallel_rank = dist.get_rank
    m.get_sp_group = lambda: types.SimpleNamespace(device_group=dist.group.WORLD,
                                                   all_gather=lambda t, dim=0: gather(t, None, dim=dim))
    sys.modules.update({"xfuser": types.ModuleType("xfuser"), "xfuser.core": types.ModuleType("xfuser.core"),
                        "xfuser.core.distributed": m})
