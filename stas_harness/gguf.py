"""GGUF checkpoints of the harness's random-weight models, for loading with ComfyUI-GGUF (third-party).

write_gguf() quantizes a diffusion model's state dict with the ``gguf`` package (``gguf.quants``) the
way ComfyUI-GGUF's own converter lays a file out: 2-D ``.weight`` matrices are quantized, every other
tensor (biases, norms, the Wan ``modulation`` parameters, conv kernels) stays float32, and tensors with
more than 4 dimensions carry their shape in ``comfy.gguf.orig_shape.<name>``. ComfyUI-GGUF itself is
found in the ComfyUI under test (scripts/setup.sh puts it into each testbed's custom_nodes/).
"""
from __future__ import annotations

import asyncio
from pathlib import Path

QUANTIZE_MIN_PARAMS = 1024
"""Matrices this small stay float32 (as ComfyUI-GGUF's converter keeps them)."""


def comfyui_gguf_dir(comfy_src: Path | str) -> Path | None:
    """The ComfyUI-GGUF folder in ``comfy_src``/custom_nodes (any case), else None."""
    nodes = Path(comfy_src) / "custom_nodes"
    for d in sorted(nodes.glob("*")) if nodes.is_dir() else ():
        if d.name.lower() == "comfyui-gguf" and (d / "nodes.py").exists():
            return d
    return None


def comfyui_gguf_version(pack_dir: Path) -> str:
    """The archive the pack was unpacked from (scripts/setup.sh's stamp, e.g. ComfyUI-GGUF-795e451), else 'unknown'."""
    stamp = pack_dir / ".stas-archive"
    return stamp.read_text().strip().removesuffix(".tar.gz") if stamp.exists() else "unknown"


def load_comfyui_gguf(pack_dir: Path):
    """Load ComfyUI-GGUF with ComfyUI's own custom-node loader (once); its NODE_CLASS_MAPPINGS."""
    import nodes as comfy_nodes
    if "UnetLoaderGGUF" not in comfy_nodes.NODE_CLASS_MAPPINGS:
        ok = asyncio.run(comfy_nodes.load_custom_node(str(pack_dir)))
        assert ok is not False and "UnetLoaderGGUF" in comfy_nodes.NODE_CLASS_MAPPINGS, \
            f"ComfyUI failed to load ComfyUI-GGUF from {pack_dir}"
    return comfy_nodes.NODE_CLASS_MAPPINGS


def quant_types(row_lengths) -> list[str]:
    """Names of the GGML types the ``gguf`` package writes for rows of every length in ``row_lengths``,
    smallest (bits per weight) first."""
    import gguf
    import numpy as np
    out = []
    for t in gguf.GGMLQuantizationType:
        block, size = gguf.GGML_QUANT_SIZES[t]
        if any(n % block for n in row_lengths):
            continue
        try:
            gguf.quants.quantize(np.zeros((1, block), dtype=np.float32), t)
        except Exception:  # noqa: BLE001  (the package raises various errors for types it cannot write)
            continue
        out.append((size * 8 / block, t.name))
    return [name for _, name in sorted(out)]


def _quantizable(name: str, shape) -> bool:
    n = 1
    for s in shape:
        n *= s
    return name.endswith(".weight") and len(shape) == 2 and n > QUANTIZE_MIN_PARAMS and "modulation" not in name


def row_lengths(state_dict) -> set[int]:
    """Row lengths of the matrices write_gguf() quantizes."""
    return {int(v.shape[-1]) for k, v in state_dict.items() if _quantizable(k, tuple(v.shape))}


def write_gguf(state_dict, path: Path | str, qtype: str = "Q8_0", arch: str = "wan") -> dict:
    """Write ``state_dict`` (torch tensors) as a GGUF file of architecture ``arch``, matrices in ``qtype``.
    Returns {name: type name} of what was written."""
    import gguf
    import numpy as np
    import torch
    qt = gguf.GGMLQuantizationType[qtype]
    w = gguf.GGUFWriter(str(path), arch=arch)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    written = {}
    for name, t in state_dict.items():
        a = t.detach().to("cpu", torch.float32).numpy()
        if _quantizable(name, a.shape):
            w.add_tensor(name, gguf.quants.quantize(a, qt), raw_dtype=qt)
            written[name] = qtype
            continue
        if a.ndim > 4:
            w.add_array(f"comfy.gguf.orig_shape.{name}", list(a.shape))
            a = a.reshape(a.shape[0], -1)
        w.add_tensor(name, np.ascontiguousarray(a), raw_dtype=gguf.GGMLQuantizationType.F32)
        written[name] = "F32"
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return written
