// Panel renderers of the live monitor. Each takes its panel's JSON (from /events "snapshot") and
// returns DOM nodes; a panel that is {unknown: true} or that fails to render shows "unknown".
"use strict";

import { drawBars } from "./chart.js";

export function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of kids.flat(Infinity)) if (c !== null && c !== undefined && c !== false) e.append(c instanceof Node ? c : String(c));
  return e;
}

const isNum = (v) => typeof v === "number" && Number.isFinite(v);
export const fmt = (v, d = 4) => (isNum(v) ? (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(2) : +v.toFixed(d) + "") : (v === null || v === undefined ? "–" : String(v)));
export const pct = (v) => (isNum(v) ? `${(v * 100).toFixed(1)}%` : "–");
const str = (v) => (typeof v === "string" || isNum(v) ? String(v) : "–");

export function age(s) {
  if (!isNum(s)) return "–";
  if (s < 90) return `${Math.max(0, Math.round(s))}s ago`;
  if (s < 5400) return `${Math.round(s / 60)}m ago`;
  return `${(s / 3600).toFixed(1)}h ago`;
}

export function duration(s) {
  if (!isNum(s)) return "–";
  s = Math.round(s);
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}

// The seed's thresholds for the validation - training loss gap.
export function gapClass(g) {
  if (!isNum(g)) return "";
  return g < 0.3 ? "good" : g <= 0.5 ? "warn" : "bad";
}

const kv = (rows) => h("dl", { class: "kv" }, rows.map(([k, v, cls, id]) => [h("dt", {}, k), h("dd", { class: cls, id }, v)]));
const stateBadge = (s) => h("span", { class: `badge state-${str(s).replace(/[^a-z_]/gi, "")}` }, str(s));
const table = (head, rows) => h("table", {}, h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))), h("tbody", {}, rows));
const staleCls = (a) => (isNum(a) && a > 120 ? "bad" : isNum(a) && a > 30 ? "warn" : "");

export function training(p, act) {
  const prog = isNum(p.step_in_file) && isNum(p.file_total_steps) && p.file_total_steps > 0 ? p.step_in_file / p.file_total_steps : null;
  const flags = Array.isArray(p.control_flags) && p.control_flags.length ? h("div", { class: "note" }, `requested: ${p.control_flags.join(", ")} (applied at the next optimizer step)`) : null;
  return [
    h("div", { class: "state-line" }, stateBadge(p.state), " ", h("span", { id: "training-state" }, str(p.state)),
      p.daemon_running ? h("span", { class: "muted" }, ` daemon pid ${str(p.daemon_pid)}, heartbeat ${age(p.heartbeat_age_s)}`) : h("span", { class: "muted" }, " daemon not running")),
    flags,
    kv([["file", str(p.current_file)], ["step in file", `${str(p.step_in_file)} / ${str(p.file_total_steps)}`],
      ["global step", str(p.current_step)], ["ETA", duration(p.eta_seconds)], ["tokens/s", fmt(p.tokens_per_sec, 1)],
      ["loss", fmt(p.loss)], ["validation loss", fmt(p.validation_loss)],
      ["val − train gap", fmt(p.val_train_gap, 3), `gap ${gapClass(p.val_train_gap)}`],
      ["learning rate", fmt(p.learning_rate, 6)], ["epoch", fmt(p.epoch, 2)]]),
    h("div", { class: "progress", title: "progress in file" }, h("div", { class: "fill", style: `width:${prog === null ? 0 : (prog * 100).toFixed(1)}%` })),
    p.last_error && typeof p.last_error === "object" ? h("div", { class: "note bad" }, `last error: ${str(p.last_error.reason)}: ${str(p.last_error.message)}`) : null,
    h("div", { class: "actions" }, ["pause", "resume", "stop", "skip"].map((a) => h("button", { "data-action": a, onclick: () => act(a, {}) }, a))),
  ];
}

export function processes(p, wd) {
  const rows = (p.processes || []).map((r) => h("tr", {}, h("td", {}, str(r.name)), h("td", {}, stateBadge(r.state)),
    h("td", {}, str(r.pid), r.alive === false ? h("span", { class: "bad" }, " (gone)") : ""), h("td", { class: staleCls(r.heartbeat_age_s) }, age(r.heartbeat_age_s))));
  const out = [table(["process", "state", "pid", "heartbeat"], rows.length ? rows : [h("tr", {}, h("td", { colspan: 4, class: "muted" }, "no heartbeats in status/"))])];
  if (wd && !wd.unknown) {
    out.push(h("h3", {}, `watchdog: ${str(wd.state)} (heartbeat ${age(wd.heartbeat_age_s)})`));
    out.push(table(["program", "state", "pid", "restarts", "last exit"], (wd.programs || []).map((r) =>
      h("tr", {}, h("td", {}, str(r.name)), h("td", {}, stateBadge(r.state)), h("td", {}, str(r.pid)), h("td", {}, str(r.restarts)), h("td", {}, str(r.fatal_reason || r.last_exit))))));
  } else out.push(h("p", { class: "muted unknown-note" }, "watchdog: unknown"));
  return out;
}

export function queue(p, act) {
  const out = [];
  const c = p.counts || {};
  out.push(h("div", { class: "muted" }, ["processing", "high", "normal", "low", "failed", "recently_completed"].map((k) => `${k.replace("_", " ")} ${str(c[k])}`).join(" · ")));
  for (const folder of ["processing", "high", "normal", "low"]) {
    const files = (p.folders || {})[folder] || [];
    if (!files.length) continue;
    out.push(h("h3", {}, folder));
    out.push(h("ul", { class: "files" }, files.map((f) => h("li", {}, h("span", { class: "fname" }, str(f.name)), " ", stateBadge(f.state),
      folder === "processing" ? null : h("select", { "aria-label": `priority of ${f.name}`, onchange: (e) => act("set_priority", { name: f.name, priority: e.target.value }) },
        ["high", "normal", "low"].map((pr) => h("option", { value: pr, selected: pr === folder }, pr)))))));
  }
  if ((p.failed || []).length) {
    out.push(h("h3", {}, "failed"));
    out.push(h("ul", { class: "files" }, p.failed.map((f) => h("li", {}, h("span", { class: "fname" }, str(f.name)), " ", h("span", { class: "badge state-failed" }, str(f.reason)),
      " ", h("span", { class: "muted small" }, str(f.message)), " ", h("button", { class: "small", "data-action": "retry", onclick: () => act("retry", { name: f.name }) }, "retry")))));
  }
  return out;
}

export function checkpoints(p, act) {
  const rows = p.checkpoints || [];
  const levels = [...new Set(rows.flatMap((r) => Object.keys(r.by_difficulty || {})))];
  const order = ["easy", "medium", "hard", "expert"];
  levels.sort((a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99));
  const body = rows.map((r) => h("tr", { class: r.deployed ? "deployed" : "" },
    h("td", {}, str(r.global_step), r.deployed ? h("span", { class: "badge state-deployed", title: "deployed" }, "deployed") : null,
      r.flagged ? h("span", { class: "badge state-failed", title: "regression" }, "regression") : null),
    h("td", {}, r.evaluated ? pct(r.accuracy) : h("span", { class: "muted" }, "not evaluated")),
    levels.map((l) => h("td", {}, pct((r.by_difficulty || {})[l]))),
    h("td", {}, fmt(r.suite_loss ?? r.validation_loss)), h("td", {}, fmt(r.ece, 3)), h("td", {}, str(r.rank))));
  const out = [h("div", { class: "table-wrap" }, table(["step", "accuracy", ...levels, "val loss", "ECE", "rank"], body))];
  const withSamples = rows.filter((r) => (r.samples || []).length);
  for (const r of withSamples.slice(0, 3)) {
    out.push(h("details", {}, h("summary", {}, `samples at step ${str(r.global_step)}`),
      h("ul", { class: "samples" }, r.samples.map((s) => h("li", { class: s.correct ? "good" : "bad" },
        s.prompt ? h("div", { class: "prompt" }, str(s.prompt)) : null,
        h("div", {}, h("b", {}, "expected "), h("code", {}, str(s.expected)), h("b", {}, "  answer "), h("code", {}, str(s.got))))))));
  }
  out.push(h("div", { class: "actions" }, h("button", { "data-action": "deploy", onclick: () => act("deploy", {}) }, "deploy best"),
    h("button", { "data-action": "rollback", onclick: () => act("rollback", {}) }, "roll back")));
  return out;
}

export function regressions(p) {
  const alerts = p.alerts || [];
  return [h("div", {}, `${(p.flagged || []).length} checkpoint(s) flagged`),
    alerts.length ? h("ul", { class: "alerts" }, alerts.map((a) => h("li", { class: "bad" }, str(a.message || `${a.metric} ${fmt(a.value)} vs best ${fmt(a.best)}`)))) : h("p", { class: "muted" }, "no regressions")];
}

export function calibration(p) {
  const el = h("div", { class: "bars-box" });
  const bins = p.bins || [];
  requestAnimationFrame(() => drawBars(el, bins.map((b) => ({ label: `conf ${pct(b.mean_confidence)}`, value: b.accuracy, text: `${pct(b.accuracy)} n=${str(b.count)}` })), { labelWidth: 90 }));
  return [kv([["ECE", fmt(p.ece, 3)], ["items", str(p.n)]]), bins.length ? el : h("p", { class: "muted" }, "no bins yet")];
}

export function deployment(p) {
  return [kv([["state", str(p.state)], ["version", str(p.current_version)], ["checkpoint", str(p.current_checkpoint)]]),
    table(["version", "step", "outcome"], (p.history || []).map((x) => h("tr", {}, h("td", {}, str(x.version)), h("td", {}, str(x.global_step)), h("td", {}, str(x.outcome)))))];
}

export function generic(p) {
  const out = [h("div", {}, stateBadge(p.state ?? "unknown"), h("span", { class: "muted" }, ` heartbeat ${age(p.heartbeat_age_s)}`)),
    kv(Object.entries(p.fields || {}).map(([k, v]) => [k.replace(/_/g, " "), fmt(v)]))];
  for (const [name, mix] of Object.entries(p.mixes || {})) {
    const el = h("div", { class: "bars-box" });
    const total = Object.values(mix).reduce((a, b) => a + b, 0) || 1;
    const share = Object.values(mix).every((v) => v >= 0 && v <= 1);
    requestAnimationFrame(() => drawBars(el, Object.entries(mix).map(([k, v]) => ({ label: k, value: share ? v : v / total, text: fmt(v, 3) }))));
    out.push(h("h3", {}, name.replace(/_/g, " ")), el);
  }
  return out;
}

export function system(p) {
  const ram = p.ram || {}, cpu = p.cpu || {}, disk = p.disk || {};
  const bars = [{ label: "RAM", value: ram.percent / 100, text: `${fmt(ram.used_gib, 1)}/${fmt(ram.total_gib, 1)}G` },
    { label: "CPU", value: cpu.percent / 100, text: `${fmt(cpu.percent, 0)}%` },
    { label: "disk", value: disk.percent / 100, text: `${fmt(disk.free_gib, 0)}G free` }];
  for (const g of p.gpus || []) {
    bars.push({ label: `GPU${g.index} mem`, value: g.memory_used_gib / g.memory_total_gib, text: `${fmt(g.memory_used_gib, 1)}/${fmt(g.memory_total_gib, 0)}G` });
    if (isNum(g.utilization_percent)) bars.push({ label: `GPU${g.index} util`, value: g.utilization_percent / 100 });
  }
  const el = h("div", { class: "bars-box" });
  requestAnimationFrame(() => drawBars(el, bars, { labelWidth: 80 }));
  return [el, h("div", { class: "muted small" }, `${str(cpu.count)} cores, load ${Array.isArray(cpu.load) ? cpu.load.join(" ") : "–"}`,
    p.gpus === null ? " · GPU: none seen" : "")];
}
