"""Draw the pack's registry icon (docs/images/icon.png): the default STAS mask on a small latent
grid, as the Boundary Mask Builder previews it (red first frame, orange head rows, blue tail
rows, dark unsteered interior). Standard library + numpy + torch only:

    python3 tools/make_icon.py
"""
import struct
import zlib
from pathlib import Path

import numpy as np

from _repo import ROOT  # first: the repository root on sys.path (tools/_repo.py)

from stas_core.layout import BoundarySpec
from stas_core.plot import mask_preview


def write_png(path: Path, rgb: np.ndarray) -> None:
    """rgb: float [H, W, 3] in 0..1 -> 8-bit PNG (no Pillow needed)."""
    px = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in px)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    h, w = px.shape[:2]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main() -> None:
    tiles = mask_preview((4, 6, 6), BoundarySpec(), cell=30, gap=16, max_cols=2)
    size = 400
    img = np.full((size, size, 3), 0.09, dtype=np.float32)
    h, w = tiles.shape[:2]
    top, left = (size - h) // 2, (size - w) // 2
    gap = (tiles >= 0.999).all(axis=-1, keepdims=True)  # the white gaps between tiles take the background
    img[top:top + h, left:left + w] = np.where(gap, 0.09, tiles)
    out = ROOT / "docs" / "images" / "icon.png"
    write_png(out, img)
    print(f"wrote {out} ({size}x{size})")


if __name__ == "__main__":
    main()
