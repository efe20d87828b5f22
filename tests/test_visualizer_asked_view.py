"""The MA Visualizer's `block` and `step` count from the end when negative (its default block is -1): the chart
data says both what was typed and what it resolved to, so the in-node chart reads "block 2 (-1 = the last
recorded)" where the widget shows -1 (issue 31 item 7). On a tiny Wan in the real ComfyUI, recorded blocks 1
and 2, four steps."""
from __future__ import annotations

import pytest

from stas_harness import comfy_env as ce
from test_integration_visualizer import latent, planted_model, recorder, visualize

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("block, step, want", [(-1, -1, (2, 3)), (-2, 0, (1, 0)), (1, 2, (1, 2))])
def test_chart_says_what_a_negative_block_or_step_resolved_to(pk, block, step, want):
    model, _ = planted_model(pk)
    rm, rec = recorder(pk, model, blocks="1,2")
    samples = ce.sample(rm, latent(), steps=4)
    ui = visualize(pk, rec, samples, block=block, step=step).ui["stas_profile"][0]
    assert (ui["block"], ui["step"]) == want
    assert ui["asked"] == {"block": block, "step": step}
