// The live monitor page: one EventSource (/events) feeds everything; the browser reconnects by
// itself after a dropped connection and the server then resends the history and a snapshot.
"use strict";

import { drawChart, smooth } from "./chart.js";
import * as P from "./panels.js";

const MAX_POINTS = 5000;
const points = new Map(); // "step:kind" -> metrics line (kind t = training, v = validation)
let snapshot = null;
let drawPending = false;

const $ = (id) => document.getElementById(id);
const key = (p) => `${p.global_step}:${p.validation_loss !== undefined && p.loss === undefined ? "v" : "t"}`;

function addPoints(list, replace) {
  if (replace) points.clear();
  for (const p of list || []) if (p && Number.isFinite(p.global_step)) points.set(key(p), p);
  if (points.size > MAX_POINTS) {
    const keep = [...points.entries()].sort((a, b) => a[1].global_step - b[1].global_step).slice(-MAX_POINTS);
    points.clear();
    for (const [k, v] of keep) points.set(k, v);
  }
  scheduleCharts();
}

function sorted() {
  return [...points.values()].sort((a, b) => a.global_step - b.global_step || (a.time || 0) - (b.time || 0));
}

function scheduleCharts() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => { drawPending = false; drawCharts(); });
}

function drawCharts() {
  const all = sorted();
  const train = all.filter((p) => Number.isFinite(p.loss));
  const val = all.filter((p) => Number.isFinite(p.validation_loss));
  const w = Number($("smoothing").value);
  $("smoothing-value").textContent = w.toFixed(2);
  const raw = train.map((p) => p.loss);
  const sm = smooth(raw, w);
  drawChart($("chart-loss"), [
    { name: "loss", points: train.map((p, i) => [p.global_step, raw[i]]), cls: "raw" },
    { name: `smoothed (${w.toFixed(2)})`, points: train.map((p, i) => [p.global_step, sm[i]]), cls: "smooth" },
    { name: "validation", points: val.map((p) => [p.global_step, p.validation_loss]), cls: "val", dots: true },
  ], { label: "training and validation loss", legend: true });
  drawChart($("chart-lr"), [{ name: "learning rate", points: train.filter((p) => Number.isFinite(p.learning_rate)).map((p) => [p.global_step, p.learning_rate]), cls: "lr" }], { height: 150, yMin: 0 });
  drawChart($("chart-grad"), [{ name: "grad norm", points: train.filter((p) => Number.isFinite(p.grad_norm)).map((p) => [p.global_step, p.grad_norm]), cls: "grad" }], { height: 150, yMin: 0 });
  const last = all[all.length - 1];
  $("last-step").textContent = last
    ? `last logged step ${last.global_step}` + (Number.isFinite(last.loss) ? ` · loss ${P.fmt(last.loss)}` : "") +
      (Number.isFinite(last.tokens_per_sec) ? ` · ${P.fmt(last.tokens_per_sec, 0)} tok/s` : "") + (last.file ? ` · ${last.file}` : "")
    : "no steps logged yet (logs/metrics.jsonl)";
  const lastVal = val[val.length - 1];
  const lastTrain = train[train.length - 1];
  if (lastVal && lastTrain) {
    const gap = Number.isFinite(lastVal.val_train_gap) ? lastVal.val_train_gap : lastVal.validation_loss - lastTrain.loss;
    const g = $("gap-now");
    g.textContent = `val − train gap ${P.fmt(gap, 3)}`;
    g.className = `gap ${P.gapClass(gap)}`;
  }
}

// panel id -> [snapshot key, renderer]
const PANELS = {
  training: (s) => P.training(s.training, act),
  processes: (s) => P.processes(s.processes, s.watchdog),
  queue: (s) => P.queue(s.queue, act),
  checkpoints: (s) => P.checkpoints(s.checkpoints, act),
  regressions: (s) => P.regressions(s.regressions),
  calibration: (s) => P.calibration(s.calibration),
  deployment: (s) => P.deployment(s.deployment),
  curriculum: (s) => P.generic(s.curriculum),
  adversarial: (s) => P.generic(s.adversarial),
  self_correction: (s) => P.generic(s.self_correction),
  system: (s) => P.system(s.system),
};

function renderPanels() {
  const panels = (snapshot && snapshot.panels) || {};
  for (const [name, render] of Object.entries(PANELS)) {
    const box = document.querySelector(`#panel-${name} .body`);
    if (!box) continue;
    const data = panels[name];
    const card = box.parentElement;
    let nodes;
    try {
      if (!data || typeof data !== "object" || data.unknown) throw new Error((data && data.reason) || "no data");
      nodes = render(panels);
      card.classList.remove("is-unknown");
    } catch (e) {
      // A missing or malformed source shows "unknown" on its own panel; the rest of the page goes on.
      nodes = [P.h("div", { class: "unknown" }, "unknown"), P.h("div", { class: "muted small" }, String(e.message || e))];
      card.classList.add("is-unknown");
    }
    box.replaceChildren(...[nodes].flat(Infinity).filter(Boolean));
  }
  const t = panels.training || {};
  $("header-state").textContent = t.unknown ? "unknown" : String(t.state ?? "unknown");
  $("header-state").className = `badge state-${String(t.unknown ? "unknown" : t.state).replace(/[^a-z_]/gi, "")}`;
  $("updated").textContent = snapshot && snapshot.generated_at ? `updated ${new Date(snapshot.generated_at).toLocaleTimeString()}` : "";
}

async function act(action, params) {
  const msg = $("action-msg");
  if (["stop", "skip", "deploy", "rollback"].includes(action) && !window.confirm(`${action}?`)) return;
  msg.className = "action-msg pending";
  msg.textContent = `${action}…`;
  const adminKey = $("admin-key").value.trim();
  try {
    const r = await fetch(`/api/actions/${action}`, {
      method: "POST",
      headers: Object.assign({ "Content-Type": "application/json" }, adminKey ? { Authorization: `Bearer ${adminKey}` } : {}),
      body: JSON.stringify(params || {}),
    });
    const body = await r.json().catch(() => ({}));
    const text = body.error || (body.stdout || body.stderr || "").trim().split("\n").slice(-3).join(" ");
    msg.className = `action-msg ${r.ok ? "good" : "bad"}`;
    msg.textContent = `${action}: ${r.ok ? "done" : `refused (${r.status})`}${text ? ` — ${text.slice(0, 300)}` : ""}`;
  } catch (e) {
    msg.className = "action-msg bad";
    msg.textContent = `${action}: ${e}`;
  }
}

function connect() {
  const conn = $("conn");
  const es = new EventSource("/events");
  es.onopen = () => { conn.textContent = "live"; conn.className = "conn live"; };
  es.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn down"; };
  es.addEventListener("history", (e) => addPoints(JSON.parse(e.data).points, true));
  es.addEventListener("step", (e) => addPoints(JSON.parse(e.data).points, false));
  es.addEventListener("snapshot", (e) => { snapshot = JSON.parse(e.data); renderPanels(); });
}

function init() {
  const k = $("admin-key");
  k.value = sessionStorage.getItem("adminKey") || "";
  k.addEventListener("change", () => sessionStorage.setItem("adminKey", k.value.trim()));
  $("smoothing").addEventListener("input", scheduleCharts);
  let t = null;
  window.addEventListener("resize", () => { clearTimeout(t); t = setTimeout(() => { drawCharts(); renderPanels(); }, 150); });
  drawCharts();
  connect();
}

init();
