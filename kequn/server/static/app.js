// The kequn dashboard: one page, hash routes (#/segments/NAME), plain ES modules, no build.
// Every figure comes from the API (server-side paging and aggregation); charts are ECharts,
// vendored in static/vendor, so the page works with no internet.
import { DICT, lang, setLang, t } from "./i18n.js";

const echarts = window.echarts;
const state = { token: sessionStorage.getItem("kequn.token"), session: null, charts: [] };
const view = () => document.getElementById("view");

// --- helpers -------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const num = (x, digits = 0) =>
  x === null || x === undefined ? "–" :
  Number(x).toLocaleString(lang() === "zh" ? "zh-CN" : "en-US", { maximumFractionDigits: digits });
const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);
const day = (s) => (s ? String(s).slice(0, 10) : "–");
const when = (s) => (s ? String(s).replace("T", " ").slice(0, 19) : "–");
const can = (action) => (state.session?.actions || []).includes(action);
const segLabel = (s) => (lang() === "zh" ? s.label_zh || s.name : s.label_en || s.name);

class ApiError extends Error {
  constructor(status, body) { super(body?.error || `HTTP ${status}`); this.status = status; this.body = body; }
}

async function api(path, { method = "GET", body, raw, headers = {} } = {}) {
  const h2 = { ...headers };
  if (state.token) h2.Authorization = `Bearer ${state.token}`;
  let payload = raw;
  if (body !== undefined) { h2["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
  const res = await fetch(path, { method, headers: h2, body: payload });
  if (!res.ok) {
    let data = null;
    try { data = await res.json(); } catch { data = null; }
    throw new ApiError(res.status, data);
  }
  const type = res.headers.get("content-type") || "";
  return type.includes("json") ? res.json() : res;
}

function notice(text, kind = "error") {
  const box = h("div", { class: `notice ${kind}`, role: "alert" }, text);
  document.getElementById("notices").append(box);
  setTimeout(() => box.remove(), 6000);
}

function chart(el, option) {
  const c = echarts.init(el, null, { renderer: "canvas" });
  c.setOption({ animation: false, textStyle: { fontFamily: "inherit" }, ...option });
  state.charts.push(c);
  return c;
}

function card(title, ...body) {
  return h("section", { class: "card" }, title ? h("h2", {}, title) : null, ...body);
}

function table(columns, rows, { testid } = {}) {
  return h("table", { class: "grid", "data-testid": testid },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : "" }, c.title)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c) =>
      h("td", { class: c.num ? "num" : "" }, c.render ? c.render(r) : r[c.key] ?? "–"))))));
}

function link(href, text) { return h("a", { href }, text); }

async function loading(fn) {
  const v = view();
  v.replaceChildren(h("p", { class: "muted" }, t("loading")));
  try { await fn(v); } catch (err) {
    v.replaceChildren(h("p", { class: "error", role: "alert" }, `${t("error")}: ${err.message}`));
  }
}

// --- jobs: background work with progress ----------------------------------------------------

async function watchJob(job, onDone) {
  // no value: an indeterminate bar until the server reports a fraction done
  const bar = h("progress", { max: 1 });
  const label = h("span", { class: "muted" }, job.message || t("job_running"));
  const row = h("div", { class: "job", "data-testid": `job-${job.kind}`, "data-status": "running" },
    `${t(`job_kind_${job.kind}`)} `, bar, " ", label);
  document.getElementById("jobs").append(row);
  for (;;) {
    await new Promise((r) => setTimeout(r, 400));
    const j = await api(`/v1/jobs/${encodeURIComponent(job.job_id)}`);
    if (j.progress > 0) bar.value = j.progress;
    row.dataset.progress = j.progress;
    label.textContent = j.status === "running" ? (j.message || t("job_running")) : t(`job_${j.status}`);
    if (j.status !== "running") {
      bar.value = j.status === "done" ? 1 : j.progress;
      row.dataset.status = j.status;
      setTimeout(() => row.remove(), 8000);
      if (j.status === "failed") notice(j.error);
      if (onDone) onDone(j);
      return j;
    }
  }
}

// Figures the server computes in the background answer {status: "computing" | "ready" |
// "failed", value, computed_at, stale}: show what there is, ask again until ready, and stop
// once the element is gone (the user went elsewhere).
async function untilReady(first, ask, show, el, { every = 1500 } = {}) {
  let answer = first;
  for (;;) {
    if (!el.isConnected) return;
    show(answer);
    if (answer.status === "failed") { notice(answer.error); return; }
    if (answer.status === "ready") return;
    if (every) await new Promise((r) => setTimeout(r, every));
    if (!el.isConnected) return;
    answer = await ask();
  }
}

// --- pages ---------------------------------------------------------------------------------

async function overviewPage(v) {
  const d = await api("/v1/dashboard/overview");
  const kpi = (label, value, hint) =>
    h("div", { class: "kpi" }, h("div", { class: "kpi-label" }, label), h("div", { class: "kpi-value" }, value),
      hint ? h("div", { class: "muted small" }, hint) : null);
  const heat = h("div", { class: "chart", "data-testid": "rfm-heatmap" });
  const sizes = h("div", { class: "chart" });
  const funnel = h("div", { class: "chart" });
  const trend = h("div", { class: "chart wide" });
  v.replaceChildren(
    h("h1", {}, t("overview")),
    h("div", { class: "kpis" },
      kpi(t("total_customers"), num(d.customers)),
      kpi(t("revenue"), h("span", { id: "kpi-revenue" }, "…")),
      kpi(t("orders"), h("span", { id: "kpi-orders" }, "…")),
      kpi(t("active_customers"), h("span", { id: "kpi-active" }, "…"), h("span", { id: "active-hint" }, ""))),
    h("div", { class: "cards" },
      card(t("rfm_grid"), d.rfm ? heat : h("p", { class: "muted" }, t("rfm_none"))),
      card(t("segment_sizes"), sizes),
      card(t("lifecycle_funnel"), d.lifecycle ? funnel : h("p", { class: "muted" }, t("lifecycle_none"))),
      card(t("trends"), trend)));
  if (d.rfm) {
    const bins = Array.from({ length: d.rfm.bins }, (_, i) => String(i + 1));
    const max = Math.max(1, ...d.rfm.cells.map((c) => c.customers));
    chart(heat, {
      tooltip: { formatter: (p) => `R ${p.value[0] + 1} · F ${p.value[1] + 1}: ${num(p.value[2])}` },
      grid: { left: 50, right: 20, top: 10, bottom: 60 },
      xAxis: { type: "category", data: bins, name: t("r_score"), nameLocation: "middle", nameGap: 28 },
      yAxis: { type: "category", data: bins, name: t("f_score"), nameLocation: "middle", nameGap: 30 },
      visualMap: { min: 0, max, calculable: true, orient: "horizontal", left: "center", bottom: 0, itemHeight: 120 },
      series: [{ type: "heatmap", label: { show: true },
        data: d.rfm.cells.map((c) => [c.r_score - 1, c.f_score - 1, c.customers]) }],
    });
  }
  const segs = [...d.segments].sort((a, b) => b.live_size - a.live_size).slice(0, 15);
  chart(sizes, {
    tooltip: {}, grid: { left: 130, right: 20, top: 10, bottom: 20 },
    xAxis: { type: "value" }, yAxis: { type: "category", data: segs.map(segLabel).reverse() },
    series: [{ type: "bar", data: segs.map((s) => s.live_size).reverse(), itemStyle: { color: "#2f6fde" } }],
  });
  if (d.lifecycle) {
    const stages = d.lifecycle.funnel;
    chart(funnel, {
      tooltip: {},
      series: [{ type: "funnel", sort: "none", left: "10%", width: "80%", minSize: "10%",
        label: { formatter: "{b}: {c}" },
        data: stages.map((s) => ({ name: lang() === "zh" ? s.label_zh : s.label_en, value: s.customers })) }],
    });
  }
  // the figures over every order take seconds with millions of orders: the server computes
  // them in the background; fill them in as they come (the rest of the page is usable)
  let trendChart = null, months = [], buyers = null;
  const showBuyers = () => {
    const box = document.getElementById("kpi-active");
    if (!box || !buyers) return;
    box.textContent = num(buyers.active);
    box.dataset.status = "ready";
    if (!trendChart || trendChart.isDisposed()) return;
    const by = Object.fromEntries(buyers.months.map((r) => [String(r.month).slice(0, 7), r]));
    trendChart.setOption({ series: [{}, { data: months.map((m) => by[m]?.buyers ?? 0) },
      { data: months.map((m) => by[m]?.new_buyers ?? 0) }] });
  };
  const showOrders = (answer) => {
    const o = answer.value;
    if (!o || trendChart) return;
    document.getElementById("kpi-revenue").textContent = num(o.revenue);
    document.getElementById("kpi-orders").textContent = num(o.orders);
    document.getElementById("active-hint").textContent = t("active_hint", { date: day(o.active_window.until) });
    months = o.trends.map((r) => String(r.month).slice(0, 7));
    trendChart = chart(trend, {
      tooltip: { trigger: "axis" }, legend: { top: 0 },
      grid: { left: 60, right: 60, top: 30, bottom: 30 },
      xAxis: { type: "category", data: months },
      yAxis: [{ type: "value", name: t("revenue") }, { type: "value", name: t("buyers") }],
      series: [
        { name: t("revenue"), type: "bar", data: o.trends.map((r) => Math.round(r.revenue)) },
        { name: t("buyers"), type: "line", yAxisIndex: 1, data: [] },
        { name: t("new_buyers"), type: "line", yAxisIndex: 1, data: [] },
      ],
    });
    trend.dataset.status = "ready";
    showBuyers();
  };
  const ask = (part) => () => api(`/v1/dashboard/overview/${part}?wait=2`);
  untilReady(d.orders, ask("orders"), showOrders, trend, { every: 0 }).catch((e) => notice(e.message));
  untilReady(d.buyers, ask("buyers"), (answer) => { if (answer.value) { buyers = answer.value; showBuyers(); } },
    trend, { every: 0 }).catch((e) => notice(e.message));
}

async function segmentsPage(v) {
  const rows = await api("/v1/segments");
  const list = table([
    { title: t("name"), render: (r) => link(`#/segments/${encodeURIComponent(r.name)}`, r.name) },
    { title: t("label"), render: segLabel },
    { title: t("live_size"), num: true, render: (r) => num(r.live_size) },
    { title: t("size"), num: true, render: (r) => num(r.size) },
    { title: t("change"), num: true, render: (r) => (r.change === null ? "–" : (r.change > 0 ? "+" : "") + num(r.change)) },
    { title: t("health"), num: true, render: (r) => h("span", { class: "health", "data-segment": r.name }, "…") },
    { title: t("evaluated"), render: (r) => when(r.as_of) },
  ], rows, { testid: "segment-list" });
  const actions = h("div", { class: "actions" },
    can("write_rules") ? h("a", { class: "button", href: "#/builder", "data-testid": "new-segment" }, t("new_segment")) : null,
    can("write_rules") ? h("button", { id: "evaluate-all", onclick: async (e) => {
      e.target.disabled = true;
      try {
        const job = await api("/v1/jobs/evaluate", { method: "POST", body: {} });
        watchJob(job, () => { if (location.hash === "#/segments") route(); });
      } catch (err) { notice(err.message); e.target.disabled = false; }
    } }, t("evaluate_all")) : null);
  v.replaceChildren(h("h1", {}, t("segments")), actions, list);
  // health takes seconds on a large workspace: the server computes it in the background
  // (status "computing", with the previous figures if any); ask again until it is ready
  const fill = (hd) => {
    for (const el of list.querySelectorAll(".health")) {
      const x = hd.segments?.[el.dataset.segment];
      el.textContent = x === null || x === undefined ? (hd.status === "ready" ? "–" : "…") : num(x, 1);
      el.classList.remove("good", "fair", "poor");
      if (typeof x === "number") el.classList.add(x >= 80 ? "good" : x >= 60 ? "fair" : "poor");
      else if (hd.status === "ready") el.classList.add("none");
    }
    list.dataset.health = hd.status;
  };
  const poll = async (wait) => {
    if (!list.isConnected) return;
    const hd = await api("/v1/dashboard/health");
    fill(hd);
    if (hd.status !== "ready" && list.isConnected) setTimeout(() => poll(Math.min(wait * 1.5, 5000)).catch(() => {}), wait);
  };
  poll(800).catch(() => {});
}

// Rule tokens for the highlighted overlay of the editor.
const KEYWORDS = new Set(["and", "or", "not", "in", "is", "null", "where", "last", "ever", "days", "day",
  "weeks", "week", "months", "month", "between", "true", "false", "segment", "then", "within", "like"]);

function highlight(text, err) {
  const out = [];
  const re = /('(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?)|(\d+(?:\.\d+)?)|([A-Za-z_\u4e00-\u9fff][\w.\u4e00-\u9fff]*)|(\s+)|(.)/gsu;
  let m;
  while ((m = re.exec(text))) {
    const [tok, str, number, word] = m;
    let cls = null;
    if (str) cls = "tok-str";
    else if (number) cls = "tok-num";
    else if (word && KEYWORDS.has(word.toLowerCase())) cls = "tok-kw";
    else if (word && /^\s*\(/.test(text.slice(m.index + tok.length))) cls = "tok-fn";
    else if (word) cls = "tok-id";
    const start = m.index, end = start + tok.length;
    const bad = err && err.start !== null && err.start !== undefined && start < Math.max(err.end, err.start + 1) && end > err.start;
    out.push(cls || bad ? h("span", { class: [cls, bad ? "tok-err" : null].filter(Boolean).join(" ") }, tok) : tok);
  }
  out.push("\n");
  return out;
}

async function builderPage(v) {
  if (!can("write_rules") && !can("read")) throw new Error(t("admin_only"));
  const input = h("textarea", { id: "rule-input", spellcheck: "false", rows: 6, "aria-label": t("rule"),
    placeholder: "count(orders, last 90 days) >= 2 and city = '上海'" });
  const overlay = h("pre", { class: "rule-overlay", "aria-hidden": "true" });
  const asOf = h("input", { id: "rule-as-of", placeholder: t("as_of_hint"), size: 22 });
  const status = h("div", { id: "rule-status", class: "muted" }, t("fix_rule"));
  const errorBox = h("pre", { id: "rule-error", class: "rule-error", hidden: true });
  const count = h("div", { id: "rule-count", class: "kpi-value" }, "–");
  const sampleBox = h("div", { id: "rule-sample" });
  const name = h("input", { id: "segment-name", placeholder: "vip_shanghai", pattern: "[A-Za-z0-9_\\-]+" });
  const labelZh = h("input", { id: "segment-label-zh" });
  const labelEn = h("input", { id: "segment-label-en" });
  const save = h("button", { id: "save-segment", disabled: true, class: "primary" }, t("save"));
  let timer = null, seq = 0, valid = false;

  const paint = (err) => { overlay.replaceChildren(...highlight(input.value, err)); };
  const check = async () => {
    const mine = ++seq;
    const rule = input.value;
    if (!rule.trim()) { status.textContent = t("fix_rule"); errorBox.hidden = true; valid = false; save.disabled = true; paint(); return; }
    status.textContent = t("checking");
    const r = await api("/v1/dashboard/rule", { method: "POST", body: { rule, as_of: asOf.value || null, sample: 10 } });
    if (mine !== seq) return;
    valid = r.valid;
    save.disabled = !(valid && name.value.trim() && can("write_rules"));
    if (!r.valid) {
      const e = r.error;
      paint(e);
      errorBox.hidden = false;
      errorBox.textContent = e.text || e.message;
      status.textContent = e.line ? `${t("error")} (${e.line}:${e.column})` : t("error");
      status.className = "error";
      count.textContent = "–";
      sampleBox.replaceChildren();
      return;
    }
    paint();
    errorBox.hidden = true;
    status.className = "muted";
    status.textContent = `${t("valid")} · ${t("as_of")} ${when(r.as_of)}`;
    count.textContent = num(r.count);
    count.dataset.count = r.count;
    sampleBox.replaceChildren(h("p", { class: "muted" }, t("of_total", { n: num(r.customers) })),
      table([
        { title: "ID", render: (x) => link(`#/customers/${encodeURIComponent(x.customer_id)}`, x.customer_id) },
        { title: t("name"), key: "name" }, { title: "city", key: "city" }, { title: "phone", key: "phone" },
      ], r.sample, { testid: "rule-sample-table" }));
  };
  const schedule = () => { paint(); clearTimeout(timer); timer = setTimeout(() => check().catch((e) => notice(e.message)), 350); };
  input.addEventListener("input", schedule);
  input.addEventListener("scroll", () => { overlay.scrollTop = input.scrollTop; overlay.scrollLeft = input.scrollLeft; });
  asOf.addEventListener("input", schedule);
  name.addEventListener("input", () => { save.disabled = !(valid && name.value.trim() && can("write_rules")); });
  save.addEventListener("click", async () => {
    save.disabled = true;
    try {
      const r = await api("/v1/segments", { method: "POST", body: {
        name: name.value.trim(), rule: input.value, label_zh: labelZh.value || null, label_en: labelEn.value || null } });
      notice(`${t("saved")}: ${r.name} (${num(r.size)})`, "ok");
      location.hash = `#/segments/${encodeURIComponent(r.name)}`;
    } catch (err) { notice(err.message); save.disabled = false; }
  });
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  if (params.get("rule")) input.value = params.get("rule");
  v.replaceChildren(
    h("h1", {}, t("new_segment")),
    h("div", { class: "cards" },
      card(t("rule"),
        h("div", { class: "editor" }, overlay, input), errorBox,
        h("label", {}, `${t("as_of")} `, asOf), status),
      card(t("count"), count, sampleBox),
      card(t("save"),
        h("label", {}, t("segment_name"), name), h("label", {}, t("label_zh"), labelZh),
        h("label", {}, t("label_en"), labelEn), save)));
  paint();
  if (input.value) schedule();
}

async function exportSegment(name, format) {
  const res = await api(`/v1/segments/${encodeURIComponent(name)}/export`, { method: "POST", body: { format } });
  const blob = await res.blob();
  const a = h("a", { href: URL.createObjectURL(blob), download: `${name}.${format}` });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

function histogramChart(el, d, color) {
  const labels = d.counts.map((_, i) => num(d.edges[i], d.edges[1] - d.edges[0] < 10 ? 1 : 0));
  chart(el, {
    tooltip: {}, grid: { left: 40, right: 10, top: 10, bottom: 40 },
    xAxis: { type: "category", data: labels, axisLabel: { rotate: 40 } }, yAxis: { type: "value" },
    series: [{ type: "bar", data: d.counts, itemStyle: { color } }],
  });
}

async function segmentPage(v, name) {
  const seg = await api(`/v1/dashboard/segments/${encodeURIComponent(name)}`);
  const personaBox = h("div", { class: "persona", "data-testid": "persona" }, t("loading"));
  const dists = h("div", { class: "dists", "data-testid": "distributions" }, t("loading"));
  const overlapBox = h("div", { "data-testid": "overlap" }, t("loading"));
  const migrationBox = h("div", {}, t("loading"));
  const sankey = h("div", { class: "chart" });
  const membersBox = h("div", {});
  const search = h("input", { id: "member-search", type: "search", placeholder: t("search") });
  const exports = can("export") ? h("div", { class: "actions" },
    h("button", { id: "export-csv", onclick: () => exportSegment(name, "csv").catch((e) => notice(e.message)) }, t("export_csv")),
    h("button", { id: "export-xlsx", onclick: () => exportSegment(name, "xlsx").catch((e) => notice(e.message)) }, t("export_xlsx")))
    : null;
  v.replaceChildren(
    h("h1", {}, `${segLabel(seg)} `, h("small", { class: "muted" }, seg.name)),
    h("pre", { class: "rule-view" }, seg.rule),
    h("div", { class: "kpis" },
      h("div", { class: "kpi" }, h("div", { class: "kpi-label" }, t("live_size")), h("div", { class: "kpi-value", "data-testid": "live-size" }, num(seg.live_size))),
      h("div", { class: "kpi" }, h("div", { class: "kpi-label" }, t("share")), h("div", { class: "kpi-value" }, pct(seg.share))),
      h("div", { class: "kpi" }, h("div", { class: "kpi-label" }, t("change")), h("div", { class: "kpi-value" }, seg.change === null ? "–" : num(seg.change))),
      h("div", { class: "kpi" }, h("div", { class: "kpi-label" }, t("evaluated")), h("div", { class: "kpi-value small" }, when(seg.as_of)))),
    h("div", { class: "cards" },
      card(t("persona"), personaBox),
      card(t("distributions"), dists),
      card(t("overlap"), overlapBox),
      card(t("migration"), migrationBox)),
    card(t("members"), h("div", { class: "actions" }, search, exports), membersBox));
  // distributions, overlap and migration read every score and membership: the server
  // computes them in the background; the members table below does not wait for them
  const showAnalysis = (analysis) => {
    if (analysis.status !== "ready" && !analysis.stale) return;
    dists.dataset.status = analysis.status;
    dists.replaceChildren();
    for (const [key, color] of [["recency_days", "#5b8ff9"], ["frequency", "#5ad8a6"], ["monetary", "#f6bd16"], ["clv", "#e8684a"]]) {
      const d = analysis.distributions[key];
      if (!d || !d.counts.length) continue;
      const el = h("div", { class: "chart small" });
      dists.append(h("div", {}, h("h3", {}, `${t(key)} · ${t("median")} ${num(d.median, 1)}`), el));
      histogramChart(el, d, color);
    }
    overlapBox.replaceChildren(table([
      { title: t("segments"), render: (r) => link(`#/segments/${encodeURIComponent(r.segment)}`, r.segment) },
      { title: t("both"), num: true, render: (r) => num(r.both) },
      { title: t("size"), num: true, render: (r) => num(r.size) },
      { title: t("jaccard"), num: true, render: (r) => r.jaccard.toFixed(3) },
    ], analysis.overlap.slice(0, 10)));
    migrationBox.replaceChildren(analysis.migration ? sankey : h("p", { class: "muted" }, t("no_migration")));
    if (analysis.migration) {
      const node = (seg, side) => (seg === null ? `∅ ${side}` : `${seg} ${side}`);
      const links = analysis.migration.moves.map((m) => ({ source: node(m.from, "·1"), target: node(m.to, "·2"), value: m.customers }));
      const names = [...new Set(links.flatMap((l) => [l.source, l.target]))];
      const old = echarts.getInstanceByDom(sankey);
      if (old) { old.dispose(); state.charts = state.charts.filter((c) => c !== old); }
      chart(sankey, { tooltip: {}, series: [{ type: "sankey", data: names.map((n) => ({ name: n })), links,
        left: 10, right: 90, label: { fontSize: 11 } }] });
    }
  };
  const askAnalysis = () => api(`/v1/dashboard/segments/${encodeURIComponent(name)}/analysis`);
  askAnalysis().then((first) => untilReady(first, askAnalysis, showAnalysis, dists))
    .catch((e) => { dists.textContent = e.message; });
  const showPersona = (answer) => {
    const p = answer.persona;
    personaBox.dataset.status = answer.status;
    if (answer.status === "failed") { personaBox.textContent = answer.error; return; }
    if (!p) { personaBox.textContent = t("computing"); return; }
    const zh = lang() === "zh";
    personaBox.replaceChildren(
      h("h3", {}, zh ? p.name_zh : p.name_en),
      h("p", {}, zh ? p.description_zh : p.description_en),
      h("dl", {},
        h("dt", {}, t("size")), h("dd", {}, `${num(p.size)} (${pct(p.share)})`),
        h("dt", {}, t("revenue_share")), h("dd", {}, pct(p.revenue_share)),
        h("dt", {}, `${t("monetary")} · ${t("median")}`), h("dd", {}, `${num(p.median.monetary)} / ${t("overall")} ${num(p.overall_median.monetary)}`),
        h("dt", {}, `${t("recency_days")} · ${t("median")}`), h("dd", {}, `${num(p.median.recency_days)} / ${t("overall")} ${num(p.overall_median.recency_days)}`)),
      answer.stale ? h("p", { class: "muted small" }, `${t("computing")} (${when(answer.computed_at)})`) : null);
  };
  const askPersona = () => api(`/v1/dashboard/segments/${encodeURIComponent(name)}/persona`);
  askPersona().then((first) => untilReady(first, askPersona, showPersona, personaBox))
    .catch((e) => { personaBox.textContent = e.message; });
  let offset = 0;
  const limit = 20;
  const loadMembers = async () => {
    const q = encodeURIComponent(search.value.trim());
    const d = await api(`/v1/dashboard/segments/${encodeURIComponent(name)}/members?q=${q}&offset=${offset}&limit=${limit}`);
    const prev = h("button", { id: "members-prev", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - limit); loadMembers(); } }, t("prev"));
    const next = h("button", { id: "members-next", disabled: offset + limit >= d.total, onclick: () => { offset += limit; loadMembers(); } }, t("next"));
    membersBox.replaceChildren(
      table([
        { title: "ID", render: (r) => link(`#/customers/${encodeURIComponent(r.customer_id)}`, r.customer_id) },
        { title: t("name"), key: "name" }, { title: "city", key: "city" }, { title: t("channel"), key: "channel" },
        { title: "phone", key: "phone" }, { title: "email", key: "email" },
        { title: t("entered_at"), render: (r) => when(r.entered_at) },
      ], d.members, { testid: "member-table" }),
      h("div", { class: "pager" }, prev, h("span", { class: "muted", "data-testid": "member-page" },
        t("page", { a: d.total ? offset + 1 : 0, b: Math.min(offset + limit, d.total), n: num(d.total) })), next));
  };
  let searchTimer = null;
  search.addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(() => { offset = 0; loadMembers(); }, 300); });
  await loadMembers();
}

async function customersPage(v, id) {
  const box = h("input", { id: "customer-search", type: "search", placeholder: t("customer_search"), size: 36 });
  const results = h("div", {});
  const detail = h("div", {});
  v.replaceChildren(h("h1", {}, t("customers")), box, results, detail);
  let timer = null;
  const find = async () => {
    const rows = await api(`/v1/dashboard/customers?q=${encodeURIComponent(box.value.trim())}&limit=20`);
    results.replaceChildren(table([
      { title: "ID", render: (r) => link(`#/customers/${encodeURIComponent(r.customer_id)}`, r.customer_id) },
      { title: t("name"), key: "name" }, { title: "city", key: "city" }, { title: "phone", key: "phone" },
    ], rows, { testid: "customer-results" }));
  };
  box.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => find().catch((e) => notice(e.message)), 300); });
  if (!id) { await find(); return; }
  const p = await api(`/v1/dashboard/customers/${encodeURIComponent(id)}/profile?recent=5`);
  const attrs = Object.entries(p.attributes).filter(([, x]) => x !== null && x !== "");
  const timelineBox = h("div", {});
  const scoreRows = Object.entries(p.scores).map(([kind, s]) => h("tr", {}, h("th", {}, kind),
    h("td", {}, Object.entries(s).map(([k, x]) => `${k}: ${typeof x === "number" ? num(x, 2) : x}`).join(" · "))));
  detail.replaceChildren(
    h("h2", { "data-testid": "profile-name" }, `${p.attributes.name || p.customer_id} `, h("small", { class: "muted" }, p.customer_id)),
    h("div", { class: "kpis" },
      h("div", { class: "kpi" }, h("div", { class: "kpi-label" }, t("orders")), h("div", { class: "kpi-value" }, num(p.orders.orders))),
      h("div", { class: "kpi" }, h("div", { class: "kpi-label" }, t("revenue")), h("div", { class: "kpi-value" }, num(p.orders.revenue))),
      h("div", { class: "kpi" }, h("div", { class: "kpi-label" }, t("when")), h("div", { class: "kpi-value small" }, `${day(p.orders.first_order_at)} → ${day(p.orders.last_order_at)}`))),
    h("div", { class: "cards" },
      card(t("attributes"), h("table", { class: "kv", "data-testid": "profile-attributes" }, attrs.map(([k, x]) => h("tr", {}, h("th", {}, k), h("td", {}, typeof x === "object" ? JSON.stringify(x) : String(x)))))),
      card(t("identities"), table([{ title: t("source"), key: "source" }, { title: t("source_id"), key: "source_id" }, { title: t("matched_on"), key: "matched_on" }], p.identities)),
      card(t("scores"), h("table", { class: "kv" }, scoreRows)),
      card(t("memberships"), table([
        { title: t("segments"), render: (r) => link(`#/segments/${encodeURIComponent(r.segment)}`, r.segment) },
        { title: t("entered_at"), render: (r) => when(r.entered_at) }], p.segments))),
    card(t("timeline"), timelineBox));
  let offset = 0;
  const loadTimeline = async () => {
    const d = await api(`/v1/dashboard/customers/${encodeURIComponent(p.customer_id)}/timeline?offset=${offset}&limit=20`);
    timelineBox.replaceChildren(table([
      { title: t("when"), render: (r) => when(r.at) },
      { title: t("kind"), render: (r) => h("span", { class: `tag ${r.kind}` }, r.kind) },
      { title: t("what"), key: "title" }, { title: t("amount"), num: true, render: (r) => (r.amount === null ? "" : num(r.amount, 2)) },
      { title: t("detail"), render: (r) => h("code", {}, r.detail || "") },
    ], d.items, { testid: "timeline" }),
    h("div", { class: "pager" },
      h("button", { disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - 20); loadTimeline(); } }, t("prev")),
      h("span", { class: "muted" }, t("page", { a: d.total ? offset + 1 : 0, b: Math.min(offset + 20, d.total), n: d.total })),
      h("button", { disabled: offset + 20 >= d.total, onclick: () => { offset += 20; loadTimeline(); } }, t("next"))));
  };
  await loadTimeline();
}

async function clustersPage(v) {
  const runs = await api("/v1/dashboard/clusters");
  const runButton = can("write_rules") ? h("button", { id: "run-clustering", onclick: async (e) => {
    e.target.disabled = true;
    try {
      const job = await api("/v1/jobs/cluster", { method: "POST", body: { k: "auto" } });
      watchJob(job, (j) => {
        if (j.status === "done" && location.hash.startsWith("#/clusters")) route();
        else e.target.disabled = false;
      });
    } catch (err) { notice(err.message); e.target.disabled = false; }
  } }, t("run_clustering")) : null;
  if (!runs.length) { v.replaceChildren(h("h1", {}, t("clusters")), runButton, h("p", { class: "muted" }, t("no_clusters"))); return; }
  const run = runs[0];
  const feats = run.features.filter((f) => f.group !== "attr").map((f) => f.name);
  const pick = (id, value) => h("select", { id }, feats.map((f) => h("option", { value: f, selected: f === value }, f)));
  const xs = pick("cluster-x", feats[0]), ys = pick("cluster-y", feats[Math.min(2, feats.length - 1)]);
  const scatter = h("div", { class: "chart wide tall", "data-testid": "cluster-scatter" });
  let sc = null;
  const draw = async () => {
    const d = await api(`/v1/dashboard/clusters/${encodeURIComponent(run.run_id)}/points?x=${xs.value}&y=${ys.value}&limit=1500`);
    const series = run.rules.map((r) => ({ name: `${t("cluster")} ${r.cluster}`, type: "scatter", symbolSize: 5,
      data: d.points.filter((p) => p.cluster === r.cluster).map((p) => [p.x, p.y]) }));
    series.push({ name: t("centroids"), type: "scatter", symbol: "diamond", symbolSize: 16, itemStyle: { color: "#222" },
      data: run.rules.map((r) => [r.centroid[xs.value], r.centroid[ys.value]]) });
    if (sc) sc.dispose();
    state.charts = state.charts.filter((c) => c !== sc);
    sc = chart(scatter, { tooltip: {}, legend: { top: 0 }, grid: { left: 60, right: 20, top: 40, bottom: 40 },
      xAxis: { type: "value", name: xs.value, nameLocation: "middle", nameGap: 25, scale: true },
      yAxis: { type: "value", name: ys.value, scale: true }, series });
  };
  xs.addEventListener("change", draw); ys.addEventListener("change", draw);
  const rules = run.rules.map((r) => {
    const name = h("input", { id: `cluster-name-${r.cluster}`, placeholder: `cluster_${r.cluster}`, size: 16 });
    const savedBox = h("span", { class: "muted", id: `cluster-saved-${r.cluster}` });
    const save = can("write_rules") ? h("button", { id: `save-cluster-${r.cluster}`, onclick: async (e) => {
      e.target.disabled = true;
      try {
        const res = await api(`/v1/dashboard/clusters/${encodeURIComponent(run.run_id)}/${r.cluster}/save`,
          { method: "POST", body: { name: name.value.trim() || `cluster_${r.cluster}` } });
        notice(`${t("saved")}: ${res.name} (${num(res.size)})`, "ok");
        savedBox.replaceChildren(link(`#/segments/${encodeURIComponent(res.name)}`, res.name), ` · ${num(res.size)}`);
        savedBox.dataset.size = res.size;
      } catch (err) { notice(err.message); }
      e.target.disabled = false;
    } }, t("save_as_segment")) : null;
    return h("div", { class: "cluster-rule" },
      h("h3", {}, `${t("cluster")} ${r.cluster} · ${num(r.size)} · ${t("revenue_share")} ${pct(r.revenue_share)}`),
      h("p", { class: "muted" }, `${t("precision")} ${pct(r.precision)} · ${t("recall")} ${pct(r.recall)}`),
      h("pre", { class: "rule-view" }, r.rule), h("div", { class: "actions" }, name, save, savedBox));
  });
  const centroidRows = feats.map((f) => h("tr", {}, h("th", {}, f), run.rules.map((r) => h("td", { class: "num" }, typeof r.centroid[f] === "number" ? num(r.centroid[f], 1) : String(r.centroid[f])))));
  v.replaceChildren(
    h("h1", {}, t("clusters")),
    h("p", { class: "muted" }, `${t("cluster_runs")} ${run.run_id} · k=${run.k} · ${t("silhouette")} ${num(run.silhouette, 3)} · ${t("as_of")} ${day(run.as_of)}`),
    h("div", { class: "actions" }, h("label", {}, t("x_axis"), xs), h("label", {}, t("y_axis"), ys), runButton),
    card(null, scatter),
    h("div", { class: "cards" },
      card(t("centroids"), h("table", { class: "grid" }, h("thead", {}, h("tr", {}, h("th", {}, ""), run.rules.map((r) => h("th", { class: "num" }, `${t("cluster")} ${r.cluster}`)))), h("tbody", {}, centroidRows))),
      card(t("rules"), rules)));
  await draw();
}

async function campaignsPage(v) {
  const d = await api("/v1/dashboard/campaigns");
  const experiments = d.experiments.map((e) => {
    const arms = e.report?.arms || [];
    return card(`${t("experiments")}: ${e.experiment}`,
      h("p", { class: "muted" }, `${t("trigger")} ${e.trigger || "–"} · ${e.segment || ""} · ${e.outcome || ""} · ${e.window_days || ""}d`),
      ...(e.report?.warnings || []).map((w) => h("p", { class: "muted small" }, w)),
      arms.length ? table([
        { title: t("arm"), key: "arm" },
        { title: t("customers"), num: true, render: (a) => num(a.n) },
        { title: t("conversion"), num: true, render: (a) => pct(a.rate) },
        { title: t("interval"), render: (a) => (a.rate_ci ? `${pct(a.rate_ci[0])} – ${pct(a.rate_ci[1])}` : "–") },
        { title: t("uplift"), render: (a) => { const u = a.uplift?.rate; return u ? `${pct(u.abs)} [${u.abs_ci ? `${pct(u.abs_ci[0])}, ${pct(u.abs_ci[1])}` : "–"}]` : "–"; } },
        { title: t("p_value"), num: true, render: (a) => (typeof a.uplift?.rate?.p_value === "number" ? a.uplift.rate.p_value.toFixed(3) : "–") },
        { title: t("revenue"), num: true, render: (a) => num(a.revenue, 0) },
      ], arms, { testid: "experiment-arms" }) : h("p", { class: "muted" }, e.error || t("none")));
  });
  v.replaceChildren(
    h("h1", {}, t("campaigns")),
    card(t("triggers"), table([
      { title: t("name"), key: "name" },
      { title: t("segments"), render: (r) => link(`#/segments/${encodeURIComponent(r.segment)}`, r.segment) },
      { title: t("on"), key: "on" }, { title: t("channel"), key: "channel" },
      { title: t("experiments"), render: (r) => r.experiment || "–" },
      { title: t("deliveries"), render: (r) => Object.entries(r.deliveries).map(([k, n]) => `${k} ${n}`).join(" · ") || "–" },
    ], d.triggers, { testid: "trigger-table" })),
    h("div", { class: "cards" }, experiments),
    card(t("deliveries"), table([
      { title: t("when"), render: (r) => when(r.created_at) }, { title: t("trigger"), key: "trigger" },
      { title: "ID", render: (r) => link(`#/customers/${encodeURIComponent(r.customer_id)}`, r.customer_id) },
      { title: t("kind"), key: "kind" }, { title: t("arm"), render: (r) => r.variant || "–" },
      { title: t("status"), render: (r) => h("span", { class: `tag ${r.status}` }, r.status) },
      { title: t("attempts"), num: true, key: "attempts" }, { title: t("error"), render: (r) => r.last_error || "" },
    ], d.deliveries, { testid: "delivery-table" })));
}

async function importPage(v) {
  if (!can("ingest")) { v.replaceChildren(h("h1", {}, t("import")), h("p", { class: "muted" }, t("admin_only"))); return; }
  const file = h("input", { id: "upload-file", type: "file", accept: ".csv,.tsv,.txt,.xlsx,.parquet" });
  const kind = h("select", { id: "upload-kind" }, ["customers", "orders", "events"].map((k) => h("option", { value: k }, t(`${k}_kind`))));
  const source = h("input", { id: "upload-source", value: "dashboard", size: 14 });
  const previewBox = h("div", { id: "upload-preview" });
  const resultBox = h("div", { id: "import-result" });
  let upload = null;
  const showPreview = (p) => {
    upload = p;
    const selects = p.headers.map((col) => {
      const field = Object.entries(p.mapping).find(([, c]) => c === col)?.[0] || "";
      return h("select", { "data-column": col, class: "map-select" },
        h("option", { value: "ignore", selected: !field }, t("ignore")),
        p.fields.map((f) => h("option", { value: f, selected: f === field }, f)));
    });
    const go = h("button", { id: "start-import", class: "primary", disabled: !!p.error }, t("start_import"));
    for (const s of selects) s.addEventListener("change", async () => {
      const map = Object.fromEntries(selects.map((x) => [x.dataset.column, x.value]));
      try { showPreview(await api(`/v1/dashboard/uploads/${p.upload_id}/preview`, { method: "POST", body: { kind: kind.value, map } })); }
      catch (e) { notice(e.message); }
    });
    go.addEventListener("click", async () => {
      go.disabled = true;
      const map = Object.fromEntries(selects.map((x) => [x.dataset.column, x.value]));
      const job = await api("/v1/jobs/import", { method: "POST", body: { upload_id: p.upload_id, kind: kind.value, source: source.value || "dashboard", map } });
      resultBox.replaceChildren(h("p", { class: "muted" }, t("importing")));
      const j = await watchJob(job);
      if (j.status === "done") await showResult(j.result);
      else resultBox.replaceChildren(h("p", { class: "error" }, j.error));
    });
    previewBox.replaceChildren(
      h("h2", {}, `${t("detected")} · ${p.filename} (${p.format}${p.encoding ? ", " + p.encoding : ""})`),
      p.error ? h("p", { class: "error", id: "mapping-error" }, p.error) : null,
      h("table", { class: "grid", "data-testid": "mapping-table" },
        h("thead", {}, h("tr", {}, p.headers.map((c) => h("th", {}, c)))),
        h("tbody", {}, h("tr", {}, selects.map((s) => h("td", {}, s))),
          p.rows.map((r) => h("tr", {}, p.headers.map((c) => h("td", {}, r[c] ?? "")))))),
      go);
  };
  const showResult = async (r) => {
    const q = await api(`/v1/dashboard/quarantine?import_id=${encodeURIComponent(r.import_id)}&limit=20`);
    const skipped = (r.files || []).map((f) => f.skipped).filter(Boolean);
    resultBox.replaceChildren(
      h("div", { class: "kpis", "data-testid": "import-report" },
        h("div", { class: "kpi" }, h("div", { class: "kpi-label" }, t("rows_read")), h("div", { class: "kpi-value" }, num(r.rows_read))),
        h("div", { class: "kpi" }, h("div", { class: "kpi-label" }, t("imported")), h("div", { class: "kpi-value", id: "imported-count" }, num(r.imported))),
        h("div", { class: "kpi" }, h("div", { class: "kpi-label" }, t("duplicates")), h("div", { class: "kpi-value" }, num(r.duplicates))),
        h("div", { class: "kpi" }, h("div", { class: "kpi-label" }, t("quarantined")), h("div", { class: "kpi-value", id: "quarantined-count" }, num(q.reasons.reduce((a, x) => a + x.rows, 0))))),
      skipped.length ? h("p", { class: "muted" }, `${t("skipped")}: ${skipped.join("; ")}`) : null,
      card(t("quarantine"),
        table([{ title: t("reason"), key: "reason" }, { title: t("rows"), num: true, key: "rows" }], q.reasons, { testid: "quarantine-reasons" }),
        table([{ title: t("row"), num: true, key: "row_number" }, { title: t("reason"), key: "reason" },
          { title: t("raw"), render: (x) => h("code", {}, JSON.stringify(x.raw)) }], q.rows)));
  };
  file.addEventListener("change", async () => {
    const f = file.files[0];
    if (!f) return;
    try {
      const p = await api(`/v1/dashboard/uploads?filename=${encodeURIComponent(f.name)}&kind=${kind.value}`, { method: "POST", raw: f });
      resultBox.replaceChildren();
      showPreview(p);
    } catch (e) { notice(e.message); }
  });
  kind.addEventListener("change", async () => {
    if (!upload) return;
    try { showPreview(await api(`/v1/dashboard/uploads/${upload.upload_id}/preview`, { method: "POST", body: { kind: kind.value, map: {} } })); }
    catch (e) { notice(e.message); }
  });
  v.replaceChildren(h("h1", {}, t("import")),
    card(t("upload"), h("div", { class: "actions" }, h("label", {}, t("file_kind"), kind), h("label", {}, t("source"), source), file)),
    previewBox, resultBox);
}

async function settingsPage(v) {
  if (!can("admin")) { v.replaceChildren(h("h1", {}, t("settings")), h("p", { class: "muted", id: "admin-only" }, t("admin_only"))); return; }
  const rows = await api("/v1/dashboard/tokens");
  const name = h("input", { id: "token-name", placeholder: "dashboard-viewer" });
  const role = h("select", { id: "token-role" }, ["viewer", "analyst", "admin", "ingest"].map((r) => h("option", { value: r }, r)));
  const shown = h("div", {});
  const create = h("button", { id: "create-token", onclick: async () => {
    try {
      const r = await api("/v1/dashboard/tokens", { method: "POST", body: { name: name.value.trim(), role: role.value } });
      await settingsPage(v);
      v.append(card(null, h("p", {}, t("token_once")), h("code", { id: "new-token" }, r.token)));
    } catch (e) { notice(e.message); }
  } }, t("create"));
  v.replaceChildren(h("h1", {}, t("settings")),
    card(t("tokens"), table([
      { title: t("name"), key: "name" }, { title: t("role"), key: "role" }, { title: t("prefix"), key: "prefix" },
      { title: t("created"), render: (r) => when(r.created_at) },
      { title: t("revoked"), render: (r) => (r.revoked_at ? when(r.revoked_at) : h("button", { onclick: async () => {
        try { await api(`/v1/dashboard/tokens/${encodeURIComponent(r.name)}`, { method: "DELETE" }); await settingsPage(v); } catch (e) { notice(e.message); }
      } }, t("revoke"))) },
    ], rows, { testid: "token-table" }), h("div", { class: "actions" }, name, role, create)), shown);
}

// --- shell: login, navigation, language ----------------------------------------------------

const PAGES = [["overview", "#/overview"], ["segments", "#/segments"], ["builder", "#/builder"], ["customers", "#/customers"],
  ["clusters", "#/clusters"], ["campaigns", "#/campaigns"], ["import", "#/import"], ["settings", "#/settings"]];

function renderNav() {
  const here = location.hash.split("/")[1] || "overview";
  document.getElementById("nav").replaceChildren(...PAGES.map(([key, href]) =>
    h("a", { href, class: here === key ? "active" : "", "data-page": key }, t(key))));
  document.getElementById("lang-toggle").textContent = t("language");
  document.getElementById("who").textContent = state.session ? `${state.session.name} · ${state.session.role}` : "";
  document.getElementById("logout").hidden = !state.token;
  document.getElementById("logout").textContent = t("logout");
  document.title = t("title");
  document.documentElement.lang = lang() === "zh" ? "zh-CN" : "en";
}

async function route() {
  for (const c of state.charts) c.dispose();
  state.charts = [];
  delete view().dataset.ready;
  renderNav();
  if (!state.session) return;
  const [, page = "overview", arg] = location.hash.split("?")[0].split("/");
  const name = arg ? decodeURIComponent(arg) : null;
  const pages = { overview: overviewPage, segments: name ? (v) => segmentPage(v, name) : segmentsPage,
    builder: builderPage, customers: (v) => customersPage(v, name), clusters: clustersPage,
    campaigns: campaignsPage, import: importPage, settings: settingsPage };
  await loading(pages[page] || overviewPage);
  view().dataset.ready = page;
}

function loginBox(message) {
  const input = h("input", { id: "login-token", type: "password", placeholder: "kq_…", size: 40 });
  const go = h("button", { id: "login-button", class: "primary" }, t("login"));
  const submit = async () => {
    state.token = input.value.trim();
    sessionStorage.setItem("kequn.token", state.token);
    await start();
  };
  go.addEventListener("click", submit);
  input.addEventListener("keydown", (e) => { if (e.key === "Enter") submit(); });
  view().replaceChildren(card(t("login"), h("p", { class: "muted" }, t("login_hint")),
    message ? h("p", { class: "error", id: "login-error" }, message) : null, h("label", {}, t("token"), input), go));
  view().dataset.ready = "login";
}

async function start() {
  const s = await api("/v1/dashboard/session");
  if (!s.authenticated) {
    state.session = null;
    if (state.token) { sessionStorage.removeItem("kequn.token"); state.token = null; }
    renderNav();
    loginBox(s.error);
    return;
  }
  state.session = s;
  await route();
}

function init() {
  const stored = localStorage.getItem("kequn.lang");
  setLang(stored && DICT[stored] ? stored : (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en");
  document.getElementById("lang-toggle").addEventListener("click", () => {
    setLang(lang() === "zh" ? "en" : "zh");
    localStorage.setItem("kequn.lang", lang());
    if (state.session) route(); else start();
  });
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem("kequn.token");
    state.token = null;
    state.session = null;
    start();
  });
  window.addEventListener("hashchange", route);
  window.addEventListener("resize", () => state.charts.forEach((c) => c.resize()));
  start().catch((e) => { view().replaceChildren(h("p", { class: "error" }, e.message)); });
}

init();
