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
4. in the LiteGraph canvas and in the Vue node renderer (Comfy.VueNodes.Enabled), the chart fills
   the node (>= 90 % of its width) at two sizes reached by dragging its corner, summary closed
   and open, and keeps its height when the summary opens; the figures name their channels;
5. Browse Templates shows the example workflows under comfyui-stas with their titles and
   thumbnails;
6. every node's title shows whole at its default width; 'massive' / 'activation' in the node
   search finds every node that works with massive activations (search_aliases, ComfyUI >= 0.33);
   the Node Info button shows the pack's help page.

Each test runs on the testbed's own frontend and, on the newest testbed, also on frontend 1.58
(installed by scripts/setup.sh, served with --front-end-root).

Screenshots go to the test's tmp_path only; docs/screenshots/ are written by
`tools/make_screenshots.py` (README, "Screenshots").
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from stas_harness.fixtures import serve_on_frontend
from stas_harness import server as harness
from stas_harness.visualizer_page import (H_TOK, T_LAT, VIS_ID, W_TOK, NoVueRenderer, VisualizerServer,
                                          cards_screenshot, chart_fill, exercise_chart, frontend_version, load_and_run,
                                          open_page, open_template_cards, pack_errors, sort_templates_a_to_z)

# Its own server (about 20 s to start and write the tiny Wan) and about 5-10 s a test in the browser.
pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", params=harness.frontend_params())
def vis_server(request):
    """The visualizer server with the testbed's own frontend, then (newest testbed) with frontend 1.58."""
    yield from serve_on_frontend(VisualizerServer, request.param)


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
        # the chart fills the node (>= 90 % of its width) at two sizes, dragged there by the corner, with the
        # summary closed and open, and keeps its height when the summary opens
        fills = chart_fill(fp, widths=(560, 1000))
        print(f"frontend {version} ({renderer}) chart / node width:",
              [(f["node"], f["open"], round(f["ratio"], 3)) for f in fills])
        assert [(round(f["node"] / 10), f["open"]) for f in fills] == \
            [(56, False), (56, True), (100, False), (100, True)], fills
        assert all(f["resized_by"] == "drag" for f in fills), fills
        assert all(f["ratio"] >= 0.9 for f in fills), fills
        for closed, opened in zip(fills[::2], fills[1::2]):
            assert opened["canvas_height"] >= 0.95 * closed["canvas_height"], (closed, opened)
        # the figures name the channels they show, and the steered block's successors are explained
        figs = ui["figures"]
        tracked = ", ".join(str(c) for c in ui["channels"])
        assert ui["channels"] and f"max |h| over channels {tracked}" in figs["profile"], figs["profile"]
        hier = " ".join(figs["hierarchy"])
        assert "channels shown" in hier and "block 2 *" in figs["hierarchy"] and "residual stream" in hier, hier
        assert f"max |h| over channels {tracked}" in info["title"], info["title"]
        if renderer == "litegraph":
            for name in ("profile", "heatmaps", "hierarchy", "steering"):
                assert seen[f"{name}_files"], f"PreviewImage of {name} showed nothing"
        assert not pack_errors(fp), pack_errors(fp)
        print(f"frontend {version} ({renderer}): console errors not from the pack: {fp.console_errors}")
    finally:
        fp.ctx.close()


def test_template_cards(vis_server, browser, tmp_path):  # noqa: F811
    """Browse Templates lists every example workflow under comfyui-stas, each card titled with
    its file name (all these frontends show of an extension's template) and its thumbnail loaded."""
    fp = open_page(vis_server, browser, vue=False)
    try:
        sorted_a_z = sort_templates_a_to_z(fp)
        cards = open_template_cards(fp)
        names = sorted((p.stem for p in (ROOT / "example_workflows").glob("*.json")),
                       key=lambda n: (int(n.split(".")[0]), n))
        assert sorted(c["name"] for c in cards) == sorted(names)
        if sorted_a_z:  # 1.49: the numbers in the file names give the order (10 after 9), basic first
            assert [c["name"] for c in cards] == names and names[0].startswith("1. Wan 2.1 T2V")
        for c in cards:
            assert c["name"] in c["text"], c
            assert c["loaded"] >= 256, f"thumbnail of {c['name']} did not load: {c['img']}"
        cards_screenshot(fp, cards, tmp_path / "template_cards.png")
        # a card loads its workflow: the dialog closes and the graph is the file's
        want = len(json.loads((ROOT / "example_workflows" / f"{names[0]}.json").read_text())["nodes"])
        fp.evaluate("() => window.app.graph.clear()")  # frontend 1.58 opens on its default graph
        fp.locator(f'[data-testid="template-workflow-{names[0]}"]').first.click()
        fp.wait_for_function(f"() => window.app.graph._nodes.length >= {want}", timeout=30_000)
        time.sleep(0.5)
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


TITLES_JS = """async (ids) => {
    window.app.graph.clear();
    const out = [], made = [];
    let x = 0;
    for (const id of ids) {
        const n = LiteGraph.createNode(id);
        n.pos = [x, 0];
        x += (n.size[0] || 300) + 60;
        window.app.graph.add(n);
        made.push(n);
        out.push({id, nid: String(n.id), title: n.title, width: n.size[0]});
    }
    const ds = window.app.canvas.ds;
    ds.scale = 0.5; ds.offset = [100, 300];
    window.app.graph.setDirtyCanvas(true, true);
    window.app.canvas.draw?.(true, true);
    await new Promise(r => setTimeout(r, 1500));
    const ctx = document.createElement('canvas').getContext('2d');
    for (const [k, o] of out.entries()) {
        const n = made[k];
        ctx.font = n.titleFontStyle || `${LiteGraph.NODE_TEXT_SIZE ?? 14}px Arial`;
        o.text_width = ctx.measureText(o.title).width;
        const el = document.querySelector(`[data-node-id="${o.nid}"]`);
        if (!el) continue;
        // Vue renderer: the title's text must not run past any clipping box around it
        const span = [...el.querySelectorAll('*')].find(e => e.childElementCount === 0 && e.textContent.trim() === o.title);
        if (!span) { o.vue_title = 'missing'; continue; }
        const r = span.getBoundingClientRect();
        o.vue_title = 'fits';
        for (let a = span.parentElement; a && a !== el.parentElement; a = a.parentElement) {
            const st = getComputedStyle(a);
            if (st.overflowX !== 'visible' && a.getBoundingClientRect().right < r.right - 1) o.vue_title = 'cut';
        }
    }
    return out;
}"""

SEARCH_JS = """() => [...document.querySelectorAll('[role=option], li.p-autocomplete-option, li.p-autocomplete-item')]
    .map(e => e.innerText.split('\\n')[0].trim()).filter(Boolean)"""


@pytest.mark.parametrize("renderer", ["litegraph", "vue"])
def test_node_titles_fit_and_search_finds_ma_nodes(vis_server, browser, renderer):
    """Every node's title shows whole at its default width (LiteGraph: the node is as wide as its
    title; Vue renderer: no clipping box cuts it), and on frontends that read search_aliases the node
    search finds every node that works with massive activations for 'massive' and for 'activation'."""
    info = vis_server.object_info()
    ours = {k: v for k, v in info.items() if v.get("python_module") == "custom_nodes.comfyui-stas"}
    try:
        fp = open_page(vis_server, browser, vue=renderer == "vue")
    except NoVueRenderer as e:
        pytest.skip(str(e))
    try:
        version = frontend_version(fp)
        if renderer == "vue" and version[:2] <= (1, 27):
            pytest.skip(f"frontend {version}: experimental Vue renderer (see test_in_node_chart)")
        nodes = fp.evaluate(TITLES_JS, sorted(ours))
        print(f"frontend {version} ({renderer}):", [(n["title"], round(n["width"]), n.get("vue_title")) for n in nodes])
        for n in nodes:
            assert n["title"] == ours[n["id"]]["display_name"]
            if renderer == "litegraph":
                assert n["text_width"] + 30 <= n["width"], n  # title box (about 30 px) + the text fit the node
            else:
                assert n["vue_title"] == "fits", n
        assert not pack_errors(fp), pack_errors(fp)
        if renderer == "vue" or not any(v.get("search_aliases") for v in ours.values()):
            return  # ComfyUI < 0.33 serves no search_aliases; one renderer is enough for the search box
        ma_nodes = {v["display_name"] for v in ours.values() if any(
            "massive" in a for a in v.get("search_aliases") or [])}
        assert len(ma_nodes) >= 5, ma_nodes
        fp.evaluate("() => { window.app.graph.clear(); window.app.graph.setDirtyCanvas(true, true); }")
        box = fp.locator("#graph-canvas").bounding_box()
        for query in ("massive", "activation"):
            for attempt in range(3):  # a double-click the busy 2-core machine drops opens no search box: again
                fp.mouse.dblclick(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6)
                try:
                    fp.wait_for_function("() => document.activeElement && document.activeElement.tagName === 'INPUT'",
                                         timeout=15_000)
                    break
                except Exception:  # noqa: BLE001  (playwright's TimeoutError)
                    if attempt == 2:
                        raise
            fp.keyboard.type(query)
            fp.wait_for_function(f"() => ({SEARCH_JS})().length > 0", timeout=15_000)
            time.sleep(1.0)
            found = fp.evaluate(SEARCH_JS)
            assert ma_nodes <= set(found), (query, sorted(ma_nodes - set(found)), found)
            fp.keyboard.press("Escape")
            time.sleep(0.5)
    finally:
        fp.ctx.close()


def test_node_help_page(vis_server, browser):
    """The node's help, as the frontend shows it (selection toolbox -> Node Info): the pack's
    web/docs/STASModelPatch.md, with its input table. Frontends without that button skip."""
    page = (ROOT / "web" / "docs" / "STASModelPatch.md").read_text()
    tips = [spec[1]["tooltip"] for spec in vis_server.object_info()["STASModelPatch"]["input"]["required"].values()
            if len(spec) > 1 and "|" not in spec[1].get("tooltip", "|")]  # a table cell escapes "|"
    alpha_tip = tips[0]
    assert alpha_tip in page
    fp = open_page(vis_server, browser, vue=False)
    try:
        fp.evaluate("""() => {
            const app = window.app; app.graph.clear();
            const n = LiteGraph.createNode('STASModelPatch'); n.pos = [400, 250]; app.graph.add(n);
            app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0];
            app.graph.setDirtyCanvas(true, true); app.canvas.draw?.(true, true);
        }""")
        time.sleep(0.5)
        title = fp.evaluate("""() => {
            const app = window.app, n = app.graph._nodes[0], c = app.canvas.canvas.getBoundingClientRect();
            const [x, y] = app.canvas.ds.convertOffsetToCanvas([n.pos[0], n.pos[1]]);
            return [c.left + x + 80, c.top + y - 12];
        }""")
        fp.mouse.click(*title)  # select it as a user does: the selection toolbox appears over it
        info = fp.locator('[data-testid="info-button"]')
        try:
            info.first.wait_for(state="visible", timeout=10_000)
        except Exception:  # noqa: BLE001: playwright's TimeoutError
            pytest.skip(f"frontend {frontend_version(fp)} has no Node Info button in its selection toolbox")
        try:
            info.first.click(timeout=5_000)
        except Exception:  # noqa: BLE001: frontend 1.27 places its toolbox off screen until the canvas moves
            info.first.dispatch_event("click")
        fp.wait_for_function("(t) => document.body.innerText.includes(t)", arg=alpha_tip, timeout=30_000)
        # the frontend asks for a page in the user's locale first (docs/<NodeId>/en.md), then falls back
        errors = [e for e in pack_errors(fp) if "/docs/STASModelPatch/en.md" not in e]
        assert not errors, errors
    finally:
        fp.ctx.close()
