// comfyui-stas: interactive token-profile chart inside the "MA Visualizer (STAS)" node.
//
// The node sends its chart data through the executed message (ui.stas_profile, see
// nodes/ma_visualizer.py). The chart is a DOM widget (node.addDOMWidget), so it works in the
// LiteGraph canvas and in the Vue node renderer alike. Hover: token index, latent frame,
// position in the frame (row, column), value and token class. Click: zoom to the latent frame
// under the cursor; the frame selector (or a double click) zooms back out.
import { app } from "../../scripts/app.js";

const NODE_ID = "STASMAVisualizer";
const CLASS_NAMES = ["interior", "head", "tail", "first frame"];
// Same colours as stas_core/plot.py CLASS_COLOURS (interior, head, tail, first frame).
const CLASS_COLOURS = ["#595961", "#ff9e1a", "#338cff", "#e6263a"];
const DRAW_ORDER = [0, 2, 1, 3];
const MIN_W = 480;
const CHART_H = 240;
const SUMMARY_H = 160; // the open summary's scroll box; the node grows by this much to hold it

// About n "nice" tick values (1, 2, 2.5, 5 x 10^k steps) from lo to hi, as stas_core/plot.py draws them.
function niceTicks(lo, hi, n = 5) {
  const raw = (hi - lo) / Math.max(1, n - 1);
  if (!(raw > 0)) return [lo];
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step) out.push(v);
  return out;
}

function logTicks(lo, hi) {
  const out = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * Math.pow(10, e);
      if (v >= lo && v <= hi) out.push(v);
    }
  }
  return out;
}

function fmt(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "n/a";
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a >= 1e5 || a < 1e-2) return v.toExponential(1);
  return a >= 100 ? v.toFixed(0) : v.toPrecision(3);
}

class StasChart {
  constructor(node) {
    this.node = node;
    this.data = null;
    this.frame = null; // null: all frames; else the zoomed latent frame
    this.hover = null;

    const root = document.createElement("div");
    root.className = "stas-chart";
    root.style.cssText =
      "display:flex;flex-direction:column;gap:4px;width:100%;height:100%;min-height:" + (CHART_H + 70) +
      "px;box-sizing:border-box;padding:4px;font:11px sans-serif;color:#ddd;background:#18181b;border-radius:4px;" +
      "overflow:hidden;";

    const bar = document.createElement("div");
    bar.style.cssText = "display:flex;gap:6px;align-items:center;flex-wrap:wrap;";
    this.select = document.createElement("select");
    this.select.className = "stas-frame-select";
    this.select.title = "Zoom to one latent frame";
    this.select.style.cssText = "font:11px sans-serif;background:#222;color:#ddd;border:1px solid #444;";
    this.select.addEventListener("change", () => {
      const v = this.select.value;
      this.setFrame(v === "all" ? null : Number(v));
    });
    this.select.addEventListener("pointerdown", (e) => e.stopPropagation());
    this.title = document.createElement("span");
    this.title.className = "stas-chart-title";
    this.title.style.cssText = "opacity:0.85;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;flex:1;";
    this.title.textContent = "Run the workflow to see the token profile.";
    bar.append(this.select, this.title);

    this.canvas = document.createElement("canvas");
    this.canvas.className = "stas-chart-canvas";
    this.canvas.style.cssText = "width:100%;flex:1 1 auto;min-height:" + (CHART_H / 2) + "px;cursor:crosshair;display:block;";
    this.canvas.addEventListener("pointermove", (e) => this.onMove(e));
    this.canvas.addEventListener("pointerleave", () => { this.hover = null; this.tip.textContent = "\u00a0"; this.draw(); });
    this.canvas.addEventListener("click", (e) => this.onClick(e));
    this.canvas.addEventListener("dblclick", () => this.setFrame(null));

    this.tip = document.createElement("div");
    this.tip.className = "stas-chart-tip";
    this.tip.style.cssText = "min-height:14px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;";
    this.tip.textContent = "\u00a0";

    this.details = document.createElement("details");
    this.details.className = "stas-chart-details";
    this.details.style.cssText = "flex:0 0 auto;min-height:0;";
    // the summary stays inside the node: the node grows to hold it (and shrinks back when closed)
    this.details.addEventListener("toggle", () => this.fitNode());
    const sum = document.createElement("summary");
    this.sum = sum;
    sum.textContent = "summary";
    sum.style.cursor = "pointer";
    this.pre = document.createElement("pre");
    this.pre.className = "stas-chart-summary";
    this.pre.style.cssText = "margin:2px 0 0;max-height:" + (SUMMARY_H - 20) +
      "px;overflow:auto;white-space:pre-wrap;overflow-wrap:anywhere;font:10px monospace;";
    this.details.append(sum, this.pre);

    root.append(bar, this.canvas, this.tip, this.details);
    this.root = root;
    if (typeof ResizeObserver !== "undefined") {
      this.resizer = new ResizeObserver(() => this.draw());
      this.resizer.observe(this.canvas);
    }
    this.fillSelect();
  }

  dispose() {
    this.resizer?.disconnect();
  }

  minHeight() {
    return CHART_H + 70 + (this.details.open ? SUMMARY_H : 0);
  }

  // The open summary gets room of its own: LiteGraph does not grow a node when a DOM widget's
  // content grows (the chart would shrink), so the node grows by the summary's height; the Vue
  // renderer sizes nodes to their content itself. Closing it gives the room back.
  fitNode() {
    const node = this.node;
    const want = node.computeSize?.()[1] ?? 0;
    if (this.details.open) {
      const vue = !!this.root.closest?.("[data-node-id]");
      const extra = vue ? 0 : Math.max(0, this.details.offsetHeight - this.sum.offsetHeight);
      const target = Math.max(want, node.size[1] + extra);
      this.grownBy = Math.max(0, target - node.size[1]);
      if (this.grownBy) node.setSize?.([node.size[0], target]);
    } else if (this.grownBy) {
      node.setSize?.([node.size[0], Math.max(want, node.size[1] - this.grownBy)]);
      this.grownBy = 0;
    }
    node.graph?.setDirtyCanvas?.(true, true);
    this.draw();
  }

  // -- data ----------------------------------------------------------------------------
  setData(d) {
    if (!d || !Array.isArray(d.values) || !Array.isArray(d.grid)) return;
    const [T, H, W] = d.grid;
    const P = d.rows.length * d.cols.length;
    if (d.values.length !== T * P) {
      console.warn("comfyui-stas: chart data of unexpected size", d.values.length, T * P);
      return;
    }
    // token index (in the whole video) and in-frame row/column of every kept point
    const token = new Float64Array(T * P), row = new Int32Array(T * P), col = new Int32Array(T * P);
    for (let t = 0, i = 0; t < T; t++)
      for (const r of d.rows)
        for (const c of d.cols) { token[i] = t * H * W + r * W + c; row[i] = r; col[i] = c; i++; }
    this.data = { ...d, T, H, W, P, token, row, col };
    this.frame = null;
    const ch = d.channel === "max"
      ? "max |h| over channels " + (Array.isArray(d.channels) && d.channels.length ? d.channels.join(", ") : "recorded")
      : "|h| of channel " + d.channel;
    // a negative block / step counts from the end of what was recorded: say what it resolved to
    const asked = (v, got) => (typeof v === "number" && v < 0 && v !== got
      ? ` (${v === -1 ? "-1 = the last recorded" : `${v}, counted from the last recorded`})` : "");
    const b = d.block + asked(d.asked?.block, d.block), s = d.step + asked(d.asked?.step, d.step);
    this.title.textContent = `${d.family} ${d.model}: block ${b}, step ${s} (sigma ${fmt(d.sigma)}), ` +
      `${d.prompt}, sample ${d.sample}, ${ch}${d.view ? ", " + d.view : ""}`;
    this.title.title = this.title.textContent; // the whole line on hover where the node is narrow
    this.pre.textContent = d.summary || "";
    this.root.dataset.points = String(T * P);
    this.root.dataset.frames = String(T);
    this.fillSelect();
    this.draw();
  }

  fillSelect() {
    const T = this.data ? this.data.T : 0;
    this.select.textContent = "";
    const all = new Option("all frames", "all");
    this.select.add(all);
    for (let t = 0; t < T; t++) this.select.add(new Option("frame " + t + (t === 0 ? " (first)" : ""), String(t)));
    this.select.value = this.frame === null ? "all" : String(this.frame);
    this.select.disabled = T === 0;
  }

  setFrame(f) {
    if (!this.data) return;
    this.frame = f === null || f === undefined || !(f >= 0 && f < this.data.T) ? null : f;
    this.select.value = this.frame === null ? "all" : String(this.frame);
    this.root.dataset.frame = this.frame === null ? "all" : String(this.frame);
    this.hover = null;
    this.draw();
  }

  // -- geometry --------------------------------------------------------------------------
  range() {
    const d = this.data;
    const hw = d.H * d.W;
    return this.frame === null ? [0, d.T * hw] : [this.frame * hw, (this.frame + 1) * hw];
  }

  layout() {
    const w = this.canvas.clientWidth || MIN_W, h = this.canvas.clientHeight || CHART_H;
    return { w, h, left: 48, right: 8, top: 8, bottom: 20 };
  }

  scale() {
    const d = this.data;
    let hi = 0, lo = Infinity;
    for (const v of d.values) if (v !== null && Number.isFinite(v)) { hi = Math.max(hi, v); if (v > 0) lo = Math.min(lo, v); }
    if (!(hi > 0)) hi = 1;
    if (d.log) {
      if (!Number.isFinite(lo) || lo >= hi) lo = hi / 10;
      lo = Math.max(lo, hi * 1e-6) / 1.25; hi *= 1.25;
      const a = Math.log10(lo), b = Math.log10(hi);
      return { lo, hi, f: (v) => (Math.log10(Math.max(v, lo)) - a) / (b - a) };
    }
    hi *= 1.05;
    return { lo: 0, hi, f: (v) => v / hi };
  }

  xOf(tok, L, x0, x1) {
    return L.left + ((tok + 0.5 - x0) / (x1 - x0)) * (L.w - L.left - L.right);
  }

  // -- drawing ---------------------------------------------------------------------------
  draw() {
    const cv = this.canvas, L = this.layout();
    const dpr = window.devicePixelRatio || 1;
    if (cv.width !== Math.round(L.w * dpr) || cv.height !== Math.round(L.h * dpr)) {
      cv.width = Math.round(L.w * dpr);
      cv.height = Math.round(L.h * dpr);
    }
    const g = cv.getContext("2d");
    if (!g) return;
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.fillStyle = "#18181b";
    g.fillRect(0, 0, L.w, L.h);
    const pw = L.w - L.left - L.right, ph = L.h - L.top - L.bottom;
    g.fillStyle = "#222227";
    g.fillRect(L.left, L.top, pw, ph);
    const d = this.data;
    if (!d) {
      g.fillStyle = "#888";
      g.font = "12px sans-serif";
      g.fillText("no data yet", L.left + 8, L.top + 18);
      return;
    }
    const [x0, x1] = this.range();
    const s = this.scale();
    const yOf = (v) => L.top + ph - s.f(v) * ph;
    // y grid and labels
    g.font = "10px sans-serif";
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (const v of d.log ? logTicks(s.lo, s.hi) : niceTicks(0, s.hi)) {
      const y = yOf(v);
      g.fillStyle = "#33333a";
      g.fillRect(L.left, Math.round(y), pw, 1);
      g.fillStyle = "#aaa";
      g.fillText(fmt(v), L.left - 4, y);
    }
    // frame boundaries (all frames) or token rows (one frame)
    g.textAlign = "center";
    g.textBaseline = "top";
    const hw = d.H * d.W;
    if (this.frame === null) {
      const every = Math.max(1, Math.ceil(d.T / Math.max(1, pw / 24)));
      for (let t = 0; t <= d.T; t++) {
        const x = Math.round(this.xOf(t * hw - 0.5, L, x0, x1));
        g.fillStyle = "#6c6c78";
        g.fillRect(Math.min(x, L.left + pw - 1), L.top, 1, ph);
        if (t < d.T && t % every === 0) {
          g.fillStyle = "#aaa";
          g.fillText(String(t), this.xOf((t + 0.5) * hw - 0.5, L, x0, x1), L.top + ph + 4);
        }
      }
    } else {
      const every = Math.max(1, Math.ceil(d.H / Math.max(1, pw / 24)));
      for (let r = 0; r <= d.H; r++) {
        const x = Math.round(this.xOf(x0 + r * d.W - 0.5, L, x0, x1));
        g.fillStyle = r === 0 || r === d.H ? "#6c6c78" : "#2e2e35";
        g.fillRect(Math.min(x, L.left + pw - 1), L.top, 1, ph);
        if (r < d.H && r % every === 0) {
          g.fillStyle = "#aaa";
          g.fillText("r" + r, this.xOf(x0 + (r + 0.5) * d.W - 0.5, L, x0, x1), L.top + ph + 4);
        }
      }
    }
    // points
    const n = d.values.length;
    let visible = 0;
    for (let i = 0; i < n; i++) if (d.token[i] >= x0 && d.token[i] < x1) visible++;
    const size = visible > pw * 2 ? 1.5 : visible > pw / 2 ? 2 : 3;
    for (const c of DRAW_ORDER) {
      g.fillStyle = CLASS_COLOURS[c];
      for (let i = 0; i < n; i++) {
        const v = d.values[i];
        if (d.classes[i] !== c || v === null || d.token[i] < x0 || d.token[i] >= x1) continue;
        g.fillRect(this.xOf(d.token[i], L, x0, x1) - size / 2, yOf(v) - size / 2, size, size);
      }
    }
    // hover marker
    if (this.hover !== null) {
      const i = this.hover, v = d.values[i];
      const x = this.xOf(d.token[i], L, x0, x1);
      g.strokeStyle = "#fff";
      g.lineWidth = 1;
      g.beginPath();
      g.moveTo(x, L.top);
      g.lineTo(x, L.top + ph);
      g.stroke();
      if (v !== null) {
        g.beginPath();
        g.arc(x, yOf(v), 4, 0, 2 * Math.PI);
        g.stroke();
      }
    }
  }

  // -- interaction -----------------------------------------------------------------------
  pointAt(px) {
    const d = this.data;
    if (!d) return null;
    const L = this.layout();
    const [x0, x1] = this.range();
    const tok = x0 + ((px - L.left) / (L.w - L.left - L.right)) * (x1 - x0);
    let best = null, bestD = Infinity;
    for (let i = 0; i < d.values.length; i++) {
      if (d.token[i] < x0 || d.token[i] >= x1 || d.values[i] === null) continue;
      const dist = Math.abs(d.token[i] - tok);
      if (dist < bestD) { bestD = dist; best = i; }
    }
    return best;
  }

  describe(i) {
    const d = this.data;
    const t = Math.floor(d.token[i] / (d.H * d.W));
    const pos = d.token[i] - t * d.H * d.W;
    return `token ${d.token[i]} | latent frame ${t} | row ${d.row[i]}, col ${d.col[i]} (position ${pos} of ` +
      `${d.H * d.W}) | value ${fmt(d.values[i])} | ${CLASS_NAMES[d.classes[i]] || "?"}`;
  }

  onMove(e) {
    const r = this.canvas.getBoundingClientRect();
    const sx = r.width ? this.layout().w / r.width : 1; // canvas may be scaled by the graph zoom
    const i = this.pointAt((e.clientX - r.left) * sx);
    this.hover = i;
    this.tip.textContent = i === null ? "\u00a0" : this.describe(i);
    this.draw();
  }

  onClick(e) {
    if (!this.data || this.frame !== null) return;
    const r = this.canvas.getBoundingClientRect();
    const sx = r.width ? this.layout().w / r.width : 1;
    const i = this.pointAt((e.clientX - r.left) * sx);
    if (i !== null) this.setFrame(Math.floor(this.data.token[i] / (this.data.H * this.data.W)));
  }
}

function attach(node) {
  if (node.stasChart) return node.stasChart;
  const chart = new StasChart(node);
  const widget = node.addDOMWidget("stas_chart", "stas_chart", chart.root, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => chart.minHeight(),
  });
  if (widget) {
    widget.serialize = false;
    if (widget.options) widget.options.serialize = false;
  }
  node.stasChart = chart;
  const [w, h] = node.size || [MIN_W, 0];
  node.setSize?.([Math.max(w, MIN_W), Math.max(h, (node.computeSize?.()[1] ?? 0))]);
  return chart;
}

function show(node, output) {
  const d = output?.stas_profile?.[0];
  if (d) attach(node).setData(d);
}

app.registerExtension({
  name: "comfyui-stas.MAVisualizer",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_ID) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = created?.apply(this, arguments);
      attach(this);
      return r;
    };
    const executed = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      executed?.apply(this, arguments);
      show(this, output);
    };
    const removed = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () {
      this.stasChart?.dispose();
      return removed?.apply(this, arguments);
    };
  },
});
