"""Safetensors files tagged with a format string in their metadata (profiles, recordings), so
that loading the wrong kind of file is a clear error rather than a KeyError later; and every file
the pack writes is written whole or not at all (``atomic_write``)."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import Dict, Iterator, Tuple

import torch


@contextmanager
def atomic_write(path: str) -> Iterator[str]:
    """Yields a temporary path beside ``path`` to write to; renamed over ``path`` only when the block
    finishes, so a failure midway (disk full, an interrupt, a crash) leaves any old file intact."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".part", dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)   # as open() would create it (mkstemp makes it private)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_tagged(tensors: Dict[str, torch.Tensor], path: str, metadata: Dict[str, str]) -> None:
    """safetensors' save_file, written whole or not at all."""
    from safetensors.torch import save_file

    with atomic_write(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)


def read_tagged(path: str, fmt: str, what: str) -> Tuple[Dict[str, str], Dict[str, torch.Tensor]]:
    """(metadata, tensors) of ``path``; ValueError naming ``what`` when its format is not ``fmt``."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != fmt:
            raise ValueError(f"{path} is not a comfyui-stas {what} (format {meta.get('format')!r}).")
        return meta, {k: f.get_tensor(k) for k in f.keys()}
