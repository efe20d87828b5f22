"""The MA Visualizer's in-node chart (web/stas_visualizer.js) and the template cards in the real
ComfyUI frontend.

A real ComfyUI server on 127.0.0.1 (stas_harness/server.py: temp base directory, testbed
untouched) with this pack and a test-only node that plants known massive activations
(tests/visualizer_test_nodes), driven by headless Chromium (Debian's, through Playwright);
the page itself is stas_harness/visualizer_page.py, shared with tools/make_screenshots.py:

1. the frontend loads the pack's extension with no console error;
2. the graph (tiny random-weight Wan loaded by UNETLoader -> plant -> STAS Model Patch ->
   MA Recorder -> KSampler -> MA Visualizer) is loaded into the frontend and queued with
   POST /prompt for the page's client id;
3. the chart appears inside the node with the recorded data (points, frames, planted
   values), hover names token / latent frame / position / value, a click zooms to a frame,
   the opened summary stays inside the node;
4. in the LiteGraph canvas and in the Vue node renderer (Comfy.VueNodes.Enabled);
5. Browse Templates shows the six example workflows under comfyui-stas with their titles and
   thumbnails.

Screenshots go to the test's tmp_path only; docs/screenshots/ are written by
`tools/make_screenshots.py` (README, "Screenshots").
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from stas_harness.fixtures import serve
from stas_harness.visualizer_page import (H_TOK, T_LAT, VIS_ID, W_TOK, NoVueRenderer, VisualizerServer,
                                          cards_screenshot, exercise_chart, frontend_version, load_and_run, open_page,
                                          open_template_cards, pack_errors, sort_templates_a_to_z)

# Its own server (about 20 s to start and write the tiny Wan) and about 5-10 s a test in the browser.
pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vis_server():
    yield from serve(VisualizerServer)


@pytest.mark.parametrize("renderer", ["litegraph", "vue"])
def test_in_node_chart(vis_server, browser, renderer, tmp_path):  # noqa: F811
    try:
        fp = open_page(vis_server, browser, vue=renderer == "vue")
    except NoVueRenderer as e:
        pytest.skip(str(e))
    try:
        names = fp.evaluate("() => (window.app.extensions || []).map(e => e.name)")
        assert "comfyui-stas.MAVisualizer" in names
        entry = load_and_run(vis_server, fp)
        ui = entry["outputs"][VIS_ID]["stas_profile"][0]
        assert ui["grid"] == [T_LAT, H_TOK, W_TOK] and len(ui["values"]) == T_LAT * H_TOK * W_TOK
        assert ui["prompt"] == "cond"

        info = fp.evaluate(f"""() => {{
            const c = window.app.graph.getNodeById({VIS_ID}).stasChart;
            const d = c.data;
            return {{grid: [d.T, d.H, d.W], n: d.values.length, first: d.values[0], classes: d.classes.slice(0, 3),
                     title: c.title.textContent, summary: c.pre.textContent, points: c.root.dataset.points,
                     options: c.select.options.length}};
        }}""")
        assert info["grid"] == [T_LAT, H_TOK, W_TOK] and info["n"] == T_LAT * H_TOK * W_TOK
        assert info["first"] == pytest.approx(1000.0) and info["classes"] == [3, 3, 3]
        assert "block 2, step 0" in info["title"] and ", cond, sample 0" in info["title"] and "ch 17" in info["summary"]
        assert info["options"] == T_LAT + 1
        version = frontend_version(fp)
        if renderer == "vue" and version[:2] <= (1, 27):
            assert not pack_errors(fp), pack_errors(fp)
            pytest.skip(f"frontend {version}: its experimental Vue node renderer draws no extension DOM widget "
                        "(only its own widget types); the chart shows in the default LiteGraph renderer there")

        seen = exercise_chart(vis_server, fp, entry, tmp_path, renderer)
        box = seen["canvas_box"]
        assert box and box["width"] > 200 and box["height"] > 100
        # hover over the middle of latent frame 2: token, frame, position and value are named
        tip = seen["tip"]
        assert "latent frame 2" in tip and "token " in tip and "row " in tip and "value " in tip, tip
        # click zooms to the frame under the cursor; the selector zooms back out
        assert seen["zoomed_frame"] == 2 and "latent frame 2" in seen["zoomed_tip"], seen["zoomed_tip"]
        assert seen["frame_after_select"] is None
        # the opened summary stays inside the node (it used to run over the node below)
        s = seen["summary"]
        node, pre, root = s["node"], s["pre"], s["root"]
        assert s["open"] and pre["height"] > 20
        bottom = node["y"] + node["height"] + 2
        assert root["y"] + root["height"] <= bottom and pre["y"] + pre["height"] <= bottom, s
        assert pre["x"] >= node["x"] - 2 and pre["x"] + pre["width"] <= node["x"] + node["width"] + 2, s
        assert (tmp_path / f"ma_visualizer_summary{'' if renderer == 'litegraph' else '_vue'}.png").stat().st_size
        if renderer == "litegraph":
            for name in ("profile", "heatmaps", "hierarchy", "steering"):
                assert seen[f"{name}_files"], f"PreviewImage of {name} showed nothing"
        assert not pack_errors(fp), pack_errors(fp)
        print(f"frontend {version} ({renderer}): console errors not from the pack: {fp.console_errors}")
    finally:
        fp.ctx.close()


def test_template_cards(vis_server, browser, tmp_path):  # noqa: F811
    """Browse Templates lists the six example workflows under comfyui-stas, each card titled with
    its file name (all these frontends show of an extension's template) and its thumbnail loaded."""
    fp = open_page(vis_server, browser, vue=False)
    try:
        sorted_a_z = sort_templates_a_to_z(fp)
        cards = open_template_cards(fp)
        names = sorted(p.stem for p in (ROOT / "example_workflows").glob("*.json"))
        assert sorted(c["name"] for c in cards) == names
        if sorted_a_z:  # 1.49: the numbers in the file names give the order, basic first
            assert [c["name"] for c in cards] == names and names[0].startswith("1. Wan 2.1 T2V")
        for c in cards:
            assert c["name"] in c["text"], c
            assert c["loaded"] >= 256, f"thumbnail of {c['name']} did not load: {c['img']}"
        cards_screenshot(fp, cards, tmp_path / "template_cards.png")
        # a card loads its workflow: the dialog closes and the graph is the file's
        fp.locator(f'[data-testid="template-workflow-{names[0]}"]').first.click()
        fp.wait_for_function("() => window.app.graph._nodes.length > 5", timeout=30_000)
        want = len(json.loads((ROOT / "example_workflows" / f"{names[0]}.json").read_text())["nodes"])
        assert fp.evaluate("() => window.app.graph._nodes.length") == want
        assert not pack_errors(fp), pack_errors(fp)
    finally:
        fp.ctx.close()


WIDTHS_JS = """() => {
    const n = LiteGraph.createNode('STASBoundaryMaskBuilder');
    window.app.graph.add(n);
    const w = name => n.widgets.find(x => x.name === name);
    const out = {};
    const setUnit = u => { const x = w('unit'); x.value = u; x.callback?.(u); };
    // the frontend's own number widget callback rounds with the options the pack set for the unit
    setUnit('fraction');
    w('head').callback(0.25);
    out.fraction = {value: w('head').value, precision: w('head').options.precision, step: w('head').options.step2};
    setUnit('rows');
    w('tail').callback(2.4);
    out.rows = {value: w('tail').value, precision: w('tail').options.precision, step: w('tail').options.step2,
                head: w('head').value};
    window.app.graph.remove(n);
    return out;
}"""


def test_mask_builder_widths_follow_the_unit(vis_server, browser):  # noqa: F811
    """head/tail in 'fraction' keep 0.25 (the widget used to round it to 0); in rows they are whole."""
    fp = open_page(vis_server, browser, vue=False)
    try:
        r = fp.evaluate(WIDTHS_JS)
        assert r["fraction"] == {"value": 0.25, "precision": 2, "step": 0.05}, r
        assert r["rows"]["value"] == 2 and r["rows"]["precision"] == 0 and r["rows"]["step"] == 1, r
        assert r["rows"]["head"] == 0.25, "changing the unit must not change the values"
        assert not pack_errors(fp), pack_errors(fp)
    finally:
        fp.ctx.close()


def test_missing_models_are_offered_for_download(vis_server, browser):  # noqa: F811
    """Opening an example workflow on a ComfyUI without its model files: the frontend reads the
    loaders' download entries and lists every missing file (this server has none of them)."""
    name = "1. Wan 2.1 T2V with STAS"
    wf = json.loads((ROOT / "example_workflows" / f"{name}.json").read_text())
    files = {m["name"] for n in wf["nodes"] for m in n.get("properties", {}).get("models", [])}
    assert len(files) == 3
    fp = open_page(vis_server, browser, vue=False)
    try:
        fp.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", wf)
        names_shown = "(names) => names.every(n => document.body.innerText.includes(n))"
        if frontend_version(fp)[:2] >= (1, 49):
            # 1.49 reports "3 errors found" and lists the missing models in its side panel
            fp.get_by_text("View details").first.click(timeout=30_000)
        fp.wait_for_function(names_shown, arg=sorted(files), timeout=30_000)
        # 1.49's error panel looks the nodes up on api.comfy.org, which this offline page blocks
        errors = [e for e in pack_errors(fp) if "api.comfy.org" not in e]
        assert not errors, errors
    finally:
        fp.ctx.close()
