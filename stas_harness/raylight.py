"""raylight's own USP forwards on the CPU, for tests: its source (the archive in ../shared/thirdparty/,
or $STAS_RAYLIGHT_SRC: an archive or an unpacked checkout) is imported from a temporary folder, never
copied into this repository. xfuser and yunchang (CUDA attention kernels) are not installed: raylight's
sequence-parallel attention module is replaced by ``attention`` below, exact attention over all-gathered
keys and values, and xfuser's group queries by ``ranks.install_xfuser_standin``.
"""
from __future__ import annotations

import glob
import os
import sys
import tarfile
import types
from pathlib import Path

from .comfy_env import PACK_DIR
from .ranks import gather, install_xfuser_standin


def source() -> Path | None:
    """raylight's archive or checkout, or None."""
    given = os.environ.get("STAS_RAYLIGHT_SRC")
    if given:
        return Path(given)
    found = sorted(glob.glob(str(PACK_DIR.parent / "shared" / "thirdparty" / "raylight-*.tar.gz")))
    return Path(found[-1]) if found else None


def unpack(src: Path, dest: Path) -> Path:
    """The folder holding the ``raylight`` package (unpacking an archive into ``dest``)."""
    if src.is_dir():
        root = src
    else:
        with tarfile.open(src) as tar:
            tar.extractall(dest, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(dest)
        root = dest
    pkg = next(Path(p) for p in glob.glob(str(root / "**" / "raylight" / "distributed_modules"), recursive=True))
    return pkg.parents[1]


class Attention:
    """raylight's xfuser attention, exact: self-attention of this rank's chunk against the keys and
    values of every rank, trimmed to ``length`` real tokens (set per run); cross-attention as is."""

    length = None

    def __call__(self, q, k, v, heads, *args, **kwargs):
        from comfy.ldm.modules.attention import optimized_attention
        if k.shape[1] == q.shape[1] and self.length is not None:
            k, v = gather(k, self.length), gather(v, self.length)
        return optimized_attention(q, k, v, heads, *args, **kwargs)


def usp_registry(root: Path, attention: Attention):
    """raylight's ``USPInjectRegistry`` (what its workers' ON_LOAD callback runs), importable here."""
    install_xfuser_standin()
    for name, path in (("raylight", root / "raylight"),
                       ("raylight.distributed_modules", root / "raylight" / "distributed_modules")):
        m = types.ModuleType(name)
        m.__path__ = [str(path)]
        sys.modules[name] = m
    att = types.ModuleType("raylight.distributed_modules.attention")
    att.get_attn_type = lambda: "TORCH"
    att.get_sync_ulysses = lambda: False
    att.make_xfuser_attention = lambda attn_type, sync: attention
    sys.modules[att.__name__] = att
    from raylight.distributed_modules.usp import USPInjectRegistry
    return USPInjectRegistry
