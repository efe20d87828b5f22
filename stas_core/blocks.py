"""Parse the user's index lists: blocks ("middle", "15", "10-20", "0,5,9", "all") and, with the
same grammar, the MA Recorder's steps ("all", "0-9", "-1")."""
from __future__ import annotations

from typing import Iterable, List, Mapping


def parse_index_list(text: str, n: int, what: str, *, words: Mapping[str, Iterable[int]], clip: bool,
                     hint: str) -> List[int]:
    """Indices in 0..n-1 named by ``text``, sorted and unique: ``words`` (e.g. ``all``), single
    indices, inclusive ranges ``a-b`` and comma lists; negative indices count from the end.

    ``clip``: indices past either end are dropped (one step list serves runs of any length)
    instead of being an error.  Errors start with ``what`` and end with ``hint``, so the node
    can name the fix before sampling starts.
    """
    out = set()
    for part in (text or "").strip().lower().replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if part in words:
            out.update(words[part])
            continue
        try:
            if "-" in part[1:]:
                cut = part.index("-", 1)
                lo, hi = _index(part[:cut], n, what, clip), _index(part[cut + 1:], n, what, clip)
                if lo > hi:
                    raise ValueError(f"{what}: range {part!r} runs backwards; write it as {part[cut + 1:]}-{part[:cut]}.")
                out.update(range(max(lo, 0), min(hi, n - 1) + 1))
            else:
                i = _index(part, n, what, clip)
                if 0 <= i < n:
                    out.add(i)
        except ValueError as e:
            if str(e).startswith(what):
                raise
            raise ValueError(f"{what}: cannot read {part!r}. {hint}") from None
    return sorted(out)


def _index(tok: str, n: int, what: str, clip: bool) -> int:
    i = int(tok.strip())
    j = i + n if i < 0 else i
    if not clip and not 0 <= j < n:
        raise ValueError(f"{what}: block {i} does not exist; this model has {n} (valid 0-{n - 1}, or -1 for the last).")
    return j


def parse_blocks(text: str, n_blocks: int, what: str = "blocks") -> List[int]:
    """Block indices named by ``text`` for a model of ``n_blocks`` blocks, sorted, unique.

    Accepts ``middle`` (block n_blocks // 2, the paper's choice: 15 of Wan2.1-1.3B's 30),
    ``all``, ``none``/empty (no block), single indices, inclusive ranges ``a-b`` and
    comma-separated mixtures; negative indices count from the end (``-1`` is the last).
    Raises ValueError naming the valid range, so the node can fail before sampling.
    """
    if n_blocks <= 0:
        raise ValueError(f"{what}: this model has no such blocks.")
    if (text or "").strip().lower() in ("", "none"):
        return []
    mid = [n_blocks // 2]
    return parse_index_list(
        text, n_blocks, what, words={"all": range(n_blocks), "middle": mid, "mid": mid}, clip=False,
        hint=f"Use 'middle', 'all', an index like 15, a range like 10-20, or a list like 0,5,9 "
             f"(valid indices 0-{n_blocks - 1}).")
