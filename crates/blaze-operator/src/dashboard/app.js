// The Blaze dashboard: polls the operator's JSON API and draws tables and plain SVG charts.
// No library, no network beyond the operator: the page must work offline.
"use strict";

const POLL_MS = 3000;
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2563eb", "#e8590c", "#2b8a3e", "#9c36b5", "#c92a2a", "#0b7285", "#5c940d", "#862e9c"];
const body = document.body;
const main = document.getElementById("main");

// el("td", {class: "x"}, "text", child, ...): an HTML element; text children are text nodes.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function time(t) {
  return new Date(t).toLocaleTimeString([], { hour12: false });
}

function num(v, digits) {
  if (v === undefined || v === null) return "–";
  return Number(v).toFixed(digits === undefined ? 1 : digits);
}

function conditions(list) {
  const span = el("span");
  for (const c of list || []) {
    // Degraded and Unschedulable are good when False; the others when True.
    const inverted = c.type === "Degraded" || c.type === "Unschedulable";
    const good = c.status === (inverted ? "False" : "True");
    const cls = "cond " + (c.status === "Unknown" ? "unknown" : good ? "good" : "bad");
    span.append(el("span", { class: cls, title: c.reason + ": " + c.message }, c.type + " " + c.status));
  }
  return span;
}

function events(list) {
  const ul = el("ul", { class: "events" });
  for (const n of list || []) {
    ul.append(el("li", { class: n.warning ? "warning" : "" }, time(n.t) + " " + n.reason + ": " + n.message));
  }
  if (!ul.children.length) ul.append(el("li", { class: "empty" }, "no events from the operator yet"));
  return ul;
}

function link(kind, o) {
  return el("a", { href: "/" + kind + "/" + encodeURIComponent(o.namespace) + "/" + encodeURIComponent(o.name) },
    o.namespace + "/" + o.name);
}

// A line chart of `series` ([{name, points: [[t, v|null], ...]}]) with vertical markers
// ([{t, label}]). Missing values break the line.
function chart(title, series, markers, unit) {
  const W = 600, H = 160, L = 44, R = 8, T = 8, B = 20;
  const all = series.flatMap((s) => s.points);
  const panel = el("div", { class: "panel" }, el("h3", {}, title + (unit ? " (" + unit + ")" : "")));
  const box = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", "data-title": title });
  panel.append(box);
  if (!all.length) {
    panel.append(el("p", { class: "empty" }, "no data yet"));
    return panel;
  }
  let t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]), t0 + 60000);
  const vmax = Math.max(1e-9, ...all.map((p) => (p[1] === null ? 0 : p[1])));
  const ymax = vmax * 1.1;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => H - B - (v / ymax) * (H - T - B);
  box.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  box.append(svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  const label = (tx, ty, s, anchor) => {
    const e = svg("text", { x: tx, y: ty, "text-anchor": anchor || "start" });
    e.textContent = s;
    box.append(e);
  };
  label(L - 4, T + 8, num(vmax, vmax < 10 ? 2 : 0), "end");
  label(L - 4, H - B, "0", "end");
  label(L, H - 4, time(t0));
  label(W - R, H - 4, time(t1), "end");
  for (const m of markers || []) {
    const line = svg("line", { class: "decision", x1: x(m.t), y1: T, x2: x(m.t), y2: H - B });
    const tip = svg("title");
    tip.textContent = time(m.t) + " " + m.label;
    line.append(tip);
    box.append(line);
  }
  const legend = el("div", { class: "legend" });
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    let run = [];
    const flush = () => {
      if (run.length) {
        const pl = svg("polyline", { points: run.join(" "), stroke: color, "data-series": s.name });
        box.append(pl);
      }
      run = [];
    };
    for (const [t, v] of s.points) {
      if (v === null || v === undefined) flush();
      else run.push(x(t).toFixed(1) + "," + y(v).toFixed(1));
    }
    // A single sample still shows, as a dot.
    if (run.length === 1) box.append(svg("circle", { cx: run[0].split(",")[0], cy: run[0].split(",")[1], r: 2, fill: color }));
    flush();
    legend.append(el("span", {}, el("i", { style: "background:" + color }), s.name));
  });
  panel.append(legend);
  return panel;
}

function series(points, name, field, scale) {
  return { name, points: points.map((p) => [p.t, p[field] === undefined ? null : p[field] * (scale || 1)]) };
}

async function get(path) {
  const r = await fetch(path, { cache: "no-store" });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || r.status + " " + r.statusText);
  return data;
}

function renderOverview(d) {
  const engines = el("table", {}, el("tr", {}, ...["Engine", "Kind", "Model", "Ready / desired", "Conditions", "Recent events"].map((h) => el("th", {}, h))));
  for (const e of d.engines) {
    engines.append(el("tr", { class: "engine" }, el("td", {}, link("engines", e)), el("td", {}, e.kind), el("td", {}, e.model),
      el("td", {}, e.readyReplicas + " / " + e.desiredReplicas), el("td", {}, conditions(e.conditions)), el("td", {}, events(e.events))));
  }
  const routers = el("table", {}, el("tr", {}, ...["Router", "Strategy", "Ready pods", "Endpoints", "Conditions", "Recent events"].map((h) => el("th", {}, h))));
  for (const r of d.routers) {
    routers.append(el("tr", { class: "router" }, el("td", {}, link("routers", r)), el("td", {}, r.strategy),
      el("td", {}, r.readyReplicas + " / " + r.replicas), el("td", {}, r.readyEndpoints + " ready of " + r.endpoints.length),
      el("td", {}, conditions(r.conditions)), el("td", {}, events(r.events))));
  }
  const none = (what) => el("p", { class: "empty" }, "no " + what);
  main.replaceChildren(el("h1", {}, "Engines"), d.engines.length ? engines : none("BlazeEngine"),
    el("h1", {}, "Routers"), d.routers.length ? routers : none("BlazeRouter"));
}

function renderEngine(d) {
  const p = d.points;
  const marks = d.decisions.map((x) => ({ t: x.t, label: x.from + " → " + x.to + ": " + x.reason }));
  const charts = el("div", { class: "charts" },
    chart("Workers", [series(p, "desired", "desired"), series(p, "ready", "ready")], marks),
    chart("In flight", [series(p, "in flight", "inFlight")], marks, "requests"),
    chart("Latency", [series(p, "p50", "p50LatencyMs"), series(p, "p95", "p95LatencyMs")], marks, "ms"),
    chart("Time to first token p95", [series(p, "TTFT p95", "ttftP95Ms")], marks, "ms"),
    chart("Tokens per second", [series(p, "tokens/s", "tokensPerSecond")], marks),
    chart("Error rate", [series(p, "errors", "errorRate", 100)], marks, "%"));
  const decisions = el("table", {}, el("tr", {}, el("th", {}, "Time"), el("th", {}, "Workers"), el("th", {}, "Reason")));
  for (const x of d.decisions.slice().reverse()) {
    decisions.append(el("tr", { class: "decision" }, el("td", {}, time(x.t)), el("td", {}, x.from + " → " + x.to), el("td", {}, x.reason)));
  }
  main.replaceChildren(el("h1", {}, "BlazeEngine " + d.namespace + "/" + d.name),
    el("p", {}, d.kind + " · " + d.model + " · autoscaling " + d.autoscaling + " · ready " + d.readyReplicas + " of " + d.desiredReplicas + " "), conditions(d.conditions),
    el("h2", {}, "Last hour"), charts,
    el("h2", {}, "Scale decisions"), d.decisions.length ? decisions : el("p", { class: "empty" }, "no scale decision in the last hour"),
    el("h2", {}, "Recent events"), events(d.events));
}

function renderRouter(d) {
  const BREAKER = { closed: 0, halfOpen: 1, open: 2 };
  const eps = d.history;
  const by = (field, scale) => eps.map((h) => ({ name: h.address, points: h.points.map((p) => [p.t, p[field] === undefined || p[field] === null ? null : p[field] * (scale || 1)]) }));
  const breaker = eps.map((h) => ({ name: h.address, points: h.points.map((p) => [p.t, BREAKER[p.breaker]]) }));
  const table = el("table", {}, el("tr", {}, ...["Endpoint", "Engine", "Pod", "Weight", "Breaker", "p95 latency (ms)", "Error rate"].map((h) => el("th", {}, h))));
  for (const e of d.endpoints) {
    table.append(el("tr", { class: "endpoint" }, el("td", {}, e.address), el("td", {}, e.engine), el("td", {}, e.pod), el("td", {}, e.weight),
      el("td", {}, e.breaker), el("td", {}, num(e.p95LatencyMs, 0)), el("td", {}, num(e.errorRate, 3))));
  }
  main.replaceChildren(el("h1", {}, "BlazeRouter " + d.namespace + "/" + d.name),
    el("p", {}, "strategy " + d.strategy + " · " + d.readyReplicas + " of " + d.replicas + " router pods ready "), conditions(d.conditions),
    el("h2", {}, "Endpoints"), d.endpoints.length ? table : el("p", { class: "empty" }, "no endpoint: no ready worker in the engines it selects"),
    el("h2", {}, "Last hour"), el("div", { class: "charts" },
      chart("Weight", by("weight")), chart("Breaker (0 closed, 1 half-open, 2 open)", breaker),
      chart("In flight", by("inFlight"), [], "requests"), chart("Time to first token p95", by("p95Ms"), [], "ms"),
      chart("Error rate", by("errorRate", 100), [], "%")),
    el("h2", {}, "Recent events"), events(d.events));
}

async function refresh() {
  const ns = encodeURIComponent(body.dataset.namespace), name = encodeURIComponent(body.dataset.name);
  const status = document.getElementById("status");
  try {
    switch (body.dataset.page) {
      case "engine": renderEngine(await get("/api/engines/" + ns + "/" + name)); break;
      case "router": renderRouter(await get("/api/routers/" + ns + "/" + name)); break;
      default: renderOverview(await get("/api/overview"));
    }
    status.textContent = "updated " + time(Date.now());
  } catch (e) {
    status.textContent = "cannot update: " + e.message;
  }
}

refresh();
setInterval(refresh, POLL_MS);
