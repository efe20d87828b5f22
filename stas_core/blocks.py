"""Parse the user's block selection ("middle", "15", "10-20", "0,5,9", "all")."""
from __future__ import annotations

from typing import List


def parse_blocks(text: str, n_blocks: int, what: str = "blocks") -> List[int]:
    """Block indices named by ``text`` for a model of ``n_blocks`` blocks, sorted, unique.

    Accepts ``middle`` (block n_blocks // 2, the paper's choice: 15 of Wan2.1-1.3B's 30),
    ``all``, ``none``/empty (no block), single indices, inclusive ranges ``a-b`` and
    comma-separated mixtures; negative indices count from the end (``-1`` is the last).
    Raises ValueError naming the valid range, so the node can fail before sampling.
    """
    text = (text or "").strip().lower()
    if n_blocks <= 0:
        raise ValueError(f"{what}: this model has no such blocks.")
    if text in ("", "none"):
        return []
    out = set()
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if part == "all":
            out.update(range(n_blocks))
            continue
        if part in ("middle", "mid"):
            out.add(n_blocks // 2)
            continue
        try:
            if "-" in part[1:]:
                cut = part.index("-", 1)
                lo, hi = _index(part[:cut], n_blocks, what), _index(part[cut + 1:], n_blocks, what)
                if lo > hi:
                    raise ValueError(f"{what}: range {part!r} runs backwards; write it as {hi}-{lo}.")
                out.update(range(lo, hi + 1))
            else:
                out.add(_index(part, n_blocks, what))
        except ValueError as e:
            if str(e).startswith(what):
                raise
            raise ValueError(
                f"{what}: cannot read {part!r}. Use 'middle', 'all', an index like 15, "
                f"a range like 10-20, or a list like 0,5,9 (valid indices 0-{n_blocks - 1}).") from None
    return sorted(out)


def _index(tok: str, n: int, what: str) -> int:
    i = int(tok.strip())
    j = i + n if i < 0 else i
    if not 0 <= j < n:
        raise ValueError(f"{what}: block {i} does not exist; this model has {n} (valid 0-{n - 1}, or -1 for the last).")
    return j
