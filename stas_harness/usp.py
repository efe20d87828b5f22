"""Sequence parallelism for ComfyUI's Wan through public hooks only (bench/bench_usp.py, where raylight's
xfuser/yunchang are not installed): before block 0 each rank keeps its chunk of the tokens (padded at
the end to a multiple of the world size, as raylight does) and of the RoPE table, every block runs on
that chunk, self-attention all-gathers keys and values (trimmed to the real tokens, so padding is never
attended), and after the last block the chunks are gathered. Installed with ``install(model_patcher)``
after STAS, around whatever block patch is there (STAS then sees the chunk, as under raylight).
"""
from __future__ import annotations

from .ranks import gather, pad_chunk


class WanUSP:
    def __init__(self, n_blocks: int, world: int, rank: int, group=None):
        self.n_blocks, self.world, self.rank, self.group = n_blocks, world, rank, group
        self.length = self.n_local = None
        self._pe = (None, None)

    def install(self, model_patcher):
        """A clone of ``model_patcher`` that runs sequence parallel."""
        m = model_patcher.clone()
        dit = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
        for i in range(self.n_blocks):
            m.set_model_patch_replace(_Block(self, i, dit.get(("double_block", i))), "dit", "double_block", i)
        m.model_options["transformer_options"]["optimized_attention_override"] = self.attention
        return m

    def local_pe(self, pe):
        if self._pe[0] is not pe:
            self._pe = (pe, pad_chunk(pe, self.world, self.rank, dim=1))
        return self._pe[1]

    def attention(self, func, *args, **kwargs):
        q, k, v = args[:3]
        if k.shape[1] == self.n_local and q.shape[1] == self.n_local:  # self-attention on this rank's chunk
            k, v = gather(k, self.length, self.group), gather(v, self.length, self.group)
        return func(q, k, v, *args[3:], **kwargs)


class _Block:
    def __init__(self, usp: WanUSP, index: int, inner=None):
        self.usp, self.index, self.inner = usp, index, inner

    def __call__(self, args, extra):
        u, x = self.usp, args["img"]
        if self.index == 0:
            u.length = x.shape[1]
            x = pad_chunk(x, u.world, u.rank)
            u.n_local = x.shape[1]
            ctx = args.get("txt")
            if ctx is not None and ctx.shape[1] == u.n_local:
                raise RuntimeError("WanUSP: the text length equals the chunk length; use another size")
        local = {**args, "img": x, "pe": u.local_pe(args["pe"])}
        out = self.inner(local, extra) if self.inner is not None else extra["original_block"](local)
        if self.index == u.n_blocks - 1:
            out = {**out, "img": gather(out["img"], u.length, u.group)}
        return out
