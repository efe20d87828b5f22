"""Tooltips say one thing: every input and output of every node carries one short clause (ComfyUI's
own median is 39 characters); the detail lives in docs/nodes.md (tools/node_reference.py's NOTES).
A tooltip never lists model families other than nodes/families.py's SUPPORTED."""
from __future__ import annotations

import re
import statistics

MEDIAN_BELOW = 70
LONGEST = 110


def _tooltips(pk) -> dict[str, str]:
    """'NodeId.input' / 'NodeId.output' -> tooltip ('' where there is none), from every node's schema."""
    out = {}
    for node in pk.module("nodes").NODES:
        schema = node.define_schema()
        for inp in schema.inputs:
            out[f"{schema.node_id}.{inp.id}"] = inp.tooltip or ""
        for i, o in enumerate(schema.outputs):
            out[f"{schema.node_id}.out{i}:{o.display_name or o.id or ''}"] = o.tooltip or ""
    return out


def _family_names(supported: str) -> list[str]:
    """The families SUPPORTED names, by their first word ('LTX-Video' -> 'LTX'): 'Wan', 'HunyuanVideo', ..."""
    top, depth, part = [], 0, ""
    for ch in supported + ",":
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            top.append(part.strip())
            part = ""
        else:
            part += ch
    return list(dict.fromkeys(re.split(r"[\s\-/]", name)[0] for name in top if name))


def test_every_input_and_output_has_a_short_tooltip(pk):
    tips = _tooltips(pk)
    assert len(tips) > 50, sorted(tips)
    missing = [k for k, v in tips.items() if not v.strip()]
    assert not missing, f"without a tooltip: {missing}"
    lengths = [len(v) for v in tips.values()]
    assert statistics.median(lengths) < MEDIAN_BELOW, f"median tooltip length {statistics.median(lengths)}"
    long = {k: len(v) for k, v in tips.items() if len(v) > LONGEST}
    assert not long, f"tooltips over {LONGEST} characters (move the detail to tools/node_reference.py NOTES): {long}"


def test_a_tooltip_is_one_sentence(pk):
    """No tooltip joins two sentences or clauses with '. ', '; ', '! ' or '? ' (a final '.' is fine)."""
    joined = {k: v for k, v in _tooltips(pk).items() if re.search(r"[.;!?]\s", v.strip().rstrip("."))}
    assert not joined, joined


def test_no_tooltip_lists_other_families_than_supported(pk):
    """A tooltip naming two or more model families names all of families.SUPPORTED (better: none)."""
    names = _family_names(pk.module("nodes.families").SUPPORTED)
    assert {"Wan", "HunyuanVideo", "CogVideoX", "Mochi"} <= set(names), names
    bad = {}
    for key, tip in _tooltips(pk).items():
        named = [n for n in names if re.search(rf"\b{re.escape(n)}", tip)]
        if len(named) >= 2 and set(named) != set(names):
            bad[key] = named
    assert not bad, f"tooltips listing some of the supported families {names}: {bad}"


def test_family_names_parse():
    assert _family_names("Wan 2.1/2.2 (T2V, I2V), HunyuanVideo (1.0 and 1.5), LTX-Video, LTX-2 (audio-video), "
                         "Kandinsky 5 (video), Mochi") == ["Wan", "HunyuanVideo", "LTX", "Kandinsky", "Mochi"]
