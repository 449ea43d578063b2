// Small inline-SVG line charts for the live monitor (no library, no CDN: works offline).
// drawChart(el, series, opts) replaces el's content with an SVG sized to el's width.
// A series: {name, points: [[x, y], ...], cls, dots}; points with a non-finite y are gaps.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// About n "nice" tick values covering [lo, hi] (1, 2, 5 x 10^k steps).
function niceTicks(lo, hi, n) {
  if (!(hi > lo)) { const d = Math.abs(lo) || 1; lo -= d * 0.5; hi += d * 0.5; }
  const raw = (hi - lo) / Math.max(1, n);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
}

function fmtTick(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(0);
  return +v.toPrecision(4) + "";
}

export function drawChart(el, series, opts = {}) {
  const width = Math.max(260, el.clientWidth || 600);
  const height = opts.height || 190;
  const legend = series.length > 1 || opts.legend;
  const m = { l: 52, r: 12, t: legend ? 24 : 10, b: 24 };
  const xs = [], ys = [];
  for (const s of series) for (const [x, y] of s.points) if (Number.isFinite(x) && Number.isFinite(y)) { xs.push(x); ys.push(y); }
  const svg = svgEl("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": opts.label || "chart", class: "chart" });
  el.replaceChildren(svg);
  if (!xs.length) {
    svg.append(svgEl("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "chart-empty" }, opts.empty || "no data yet"));
    return;
  }
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (opts.yMin !== undefined) y0 = Math.min(y0, opts.yMin);
  const yt = niceTicks(y0, y1, 4);
  y0 = Math.min(y0, yt[0]); y1 = Math.max(y1, yt[yt.length - 1]);
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  const W = width - m.l - m.r, H = height - m.t - m.b;
  const sx = (x) => m.l + ((x - x0) / (x1 - x0)) * W;
  const sy = (y) => m.t + H - ((y - y0) / (y1 - y0 || 1)) * H;
  const grid = svgEl("g", { class: "chart-grid" });
  for (const t of yt) {
    grid.append(svgEl("line", { x1: m.l, x2: width - m.r, y1: sy(t), y2: sy(t) }));
    grid.append(svgEl("text", { x: m.l - 6, y: sy(t) + 4, "text-anchor": "end" }, fmtTick(t)));
  }
  for (const t of niceTicks(x0, x1, Math.max(2, Math.floor(W / 90)))) {
    if (t < x0 || t > x1) continue;
    grid.append(svgEl("text", { x: sx(t), y: height - 6, "text-anchor": "middle" }, fmtTick(t)));
  }
  svg.append(grid);
  for (const s of series) {
    let d = "", pen = false;
    for (const [x, y] of s.points) {
      if (!Number.isFinite(x) || !Number.isFinite(y)) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
      pen = true;
    }
    if (d) svg.append(svgEl("path", { d, class: `line ${s.cls || ""}` }));
    if (s.dots) {
      const g = svgEl("g", { class: `dots ${s.cls || ""}` });
      for (const [x, y] of s.points) if (Number.isFinite(x) && Number.isFinite(y)) g.append(svgEl("circle", { cx: sx(x), cy: sy(y), r: 3 }));
      svg.append(g);
    }
  }
  if (legend) {
    let lx = m.l + 8;
    const g = svgEl("g", { class: "legend" });
    for (const s of series) {
      g.append(svgEl("rect", { x: lx, y: 6, width: 12, height: 4, class: `swatch ${s.cls || ""}` }));
      const t = svgEl("text", { x: lx + 16, y: 12 }, s.name);
      g.append(t);
      lx += 24 + s.name.length * 7;
    }
    svg.append(g);
  }
}

// Horizontal bars (0..1 values): [{label, value, cls}] -> SVG.
export function drawBars(el, bars, opts = {}) {
  const width = Math.max(200, el.clientWidth || 300);
  const row = 20, labelW = opts.labelWidth || 70, valueW = opts.valueWidth || 100;
  const height = bars.length * row + 4;
  const svg = svgEl("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "bars" });
  bars.forEach((b, i) => {
    const y = i * row + 2;
    const v = Number.isFinite(b.value) ? Math.max(0, Math.min(1, b.value)) : null;
    svg.append(svgEl("text", { x: 0, y: y + 13 }, b.label));
    svg.append(svgEl("rect", { x: labelW, y: y + 2, width: width - labelW - valueW, height: 14, class: "bar-bg" }));
    if (v !== null) svg.append(svgEl("rect", { x: labelW, y: y + 2, width: (width - labelW - valueW) * v, height: 14, class: `bar ${b.cls || ""}` }));
    svg.append(svgEl("text", { x: width - valueW + 6, y: y + 13 }, v === null ? "–" : (b.text || `${(v * 100).toFixed(0)}%`)));
  });
  el.replaceChildren(svg);
}

// TensorBoard's smoothing: an exponential moving average, debiased so the first points are not
// pulled towards zero (the same formula as TensorBoard's scalar dashboard).
export function smooth(values, weight) {
  let last = 0, n = 0;
  return values.map((y) => {
    if (!Number.isFinite(y)) return y;
    last = last * weight + (1 - weight) * y;
    n += 1;
    const debias = weight === 1 ? 1 : 1 - Math.pow(weight, n);
    return last / debias;
  });
}
