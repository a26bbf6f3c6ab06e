/* budgetguard dashboard: fetches the read-only JSON API and draws it with Chart.js.
   Amounts arrive as exact decimal strings and are shown as such (rounded to cents
   only where marked); charts get numbers, which only place the bars. */
"use strict";

const PALETTE = ["#3b5bdb", "#f08c00", "#2f9e44", "#e03131", "#7048e8", "#1098ad",
  "#d6336c", "#5c940d", "#868e96", "#ae3ec9", "#0b7285", "#e8590c"];
const VIEWS = ["spend", "budgets", "models", "people", "savings", "alerts", "whatif"];
const charts = {};
let refreshTimer = null;
let meta = { refresh_s: 30 };

function $(sel) { return document.querySelector(sel); }

function money(text) {
  if (text === null || text === undefined) return "-";
  const [whole, frac = ""] = String(text).replace("-", "").split(".");
  const sign = String(text).startsWith("-") ? "-" : "";
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const digits = frac.replace(/0+$/, "");
  return sign + "$" + grouped + "." + (digits.length >= 2 ? digits : (digits + "00").slice(0, 2));
}

function count(n) { return Number(n).toLocaleString("en-US"); }

function params(extra) {
  const q = new URLSearchParams();
  q.set("since", $("#f-since").value);
  const dim = $("#f-dim").value;
  const value = $("#f-value").value.trim();
  if (dim && value) q.set(dim, value);
  for (const [k, v] of Object.entries(extra || {})) if (v) q.set(k, v);
  return q.toString();
}

async function api(name, extra) {
  const response = await fetch("/api/" + name + "?" + params(extra), { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "-" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fill(table, rows, columns) {
  const body = table.querySelector("tbody");
  body.replaceChildren();
  for (const item of rows) {
    const tr = document.createElement("tr");
    if (item.key !== undefined) tr.dataset.key = item.key;
    for (const [get, cls] of columns) cell(tr, get(item), cls);
    body.appendChild(tr);
  }
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell(tr, "nothing in this period");
    td.colSpan = columns.length;
    td.className = "muted";
    body.appendChild(tr);
  }
}

function draw(id, config) {
  if (charts[id]) {
    charts[id].data = config.data;
    charts[id].update("none");
    return;
  }
  config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false }, config.options || {});
  charts[id] = new Chart(document.getElementById(id), config);
}

function stacked(labels, series, field) {
  return {
    labels: labels,
    datasets: series.map((s, i) => ({
      label: s.key, data: s[field].map((v) => (v === null ? null : Number(v))),
      backgroundColor: PALETTE[i % PALETTE.length], borderColor: PALETTE[i % PALETTE.length],
    })),
  };
}

const BREAKDOWN_COLUMNS = [[(r) => r.key], [(r) => money(r.usd), "num"], [(r) => r.share, "num"], [(r) => count(r.calls), "num"]];

function bars(id, rows) {
  draw(id, {
    type: "bar",
    data: { labels: rows.map((r) => r.key), datasets: [{ label: "spend ($)", data: rows.map((r) => Number(r.usd)), backgroundColor: PALETTE[0] }] },
    options: { indexAxis: "y", plugins: { legend: { display: false } } },
  });
}

async function loadSpend() {
  const by = $("#f-by").value;
  const bucket = $("#f-bucket").value;
  const spend = await api("spend", { by: by, bucket: bucket });
  const perFeature = by === "feature" ? spend : await api("spend", { by: "feature", bucket: bucket });
  $("[data-testid=total-usd]").textContent = money(spend.total.usd);
  $("[data-testid=total-usd]").dataset.exact = spend.total.usd;
  $("[data-testid=total-calls]").textContent = count(spend.total.calls);
  $("[data-testid=total-denied]").textContent = count(spend.total.denied);
  $("[data-testid=cost-per-call]").textContent = spend.total.cost_per_call_usd === null ? "-" : "$" + spend.total.cost_per_call_usd;
  $("#spend-caption").textContent = "per " + spend.bucket + ", by " + spend.by + " (UTC)";
  draw("chart-spend", { type: "bar", data: stacked(spend.labels, spend.series, "usd"),
    options: { scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: "USD" } } } } });
  fill($("#table-spend"), spend.series, [[(s) => s.key], [(s) => money(s.total_usd), "num"], [(s) => count(s.total_calls), "num"]]);
  draw("chart-cpc", { type: "line", data: stacked(perFeature.labels, perFeature.series, "cost_per_call_usd"),
    options: { spanGaps: true, scales: { y: { title: { display: true, text: "USD per call" } } } } });
}

async function loadBreakdowns() {
  const [models, users, tenants] = await Promise.all([
    api("breakdown", { by: "model", top: "10" }), api("breakdown", { by: "user", top: "10" }), api("breakdown", { by: "tenant", top: "10" })]);
  draw("chart-models", { type: "doughnut",
    data: { labels: models.rows.map((r) => r.key), datasets: [{ data: models.rows.map((r) => Number(r.usd)), backgroundColor: PALETTE }] },
    options: { plugins: { legend: { position: "right" } } } });
  fill($("#table-models"), models.rows, BREAKDOWN_COLUMNS);
  bars("chart-users", users.rows);
  fill($("#table-users"), users.rows, BREAKDOWN_COLUMNS);
  bars("chart-tenants", tenants.rows);
  fill($("#table-tenants"), tenants.rows, BREAKDOWN_COLUMNS);
  const values = $("#f-values");
  values.replaceChildren();
  for (const r of [...models.rows, ...users.rows, ...tenants.rows]) {
    const option = document.createElement("option");
    option.value = r.key;
    values.appendChild(option);
  }
}

async function loadSavings() {
  const savings = await api("savings");
  $("[data-testid=saved-usd]").textContent = money(savings.saved_usd);
  $("[data-testid=saved-usd]").dataset.exact = savings.saved_usd;
  draw("chart-savings", { type: "bar",
    data: { labels: savings.rows.map((r) => r.requested_model + " \u2192 " + r.model),
      datasets: [{ label: "would have cost", data: savings.rows.map((r) => Number(r.asked_usd)), backgroundColor: PALETTE[3] },
        { label: "paid", data: savings.rows.map((r) => Number(r.paid_usd)), backgroundColor: PALETTE[2] }] } });
  fill($("#table-savings"), savings.rows.map((r) => Object.assign({ key: r.requested_model + ">" + r.model }, r)), [
    [(r) => r.requested_model], [(r) => r.model], [(r) => count(r.calls), "num"],
    [(r) => money(r.asked_usd), "num"], [(r) => money(r.paid_usd), "num"], [(r) => money(r.saved_usd), "num"]]);
  $("#savings-note").textContent = savings.unpriced.length ? "No price known for: " + savings.unpriced.join(", ") : "";
}

async function loadBudgets() {
  const budgets = await fetch("/api/budgets", { cache: "no-store" }).then((r) => r.json());
  $("#budgets-note").textContent = budgets.error || budgets.note || "";
  fill($("#table-budgets"), budgets.rows, [
    [(b) => b.scope], [(b) => b.subject], [(b) => b.tenant], [(b) => b.window], [(b) => b.limit_text, "num"],
    [(b) => b.spent_text, "num"], [(b) => b.held_text, "num"], [(b) => b.remaining_text, "num"], [(b) => b.used, "num"],
    [(b) => b.resets_at], [(b) => b.enforce]]);
  const rows = $("#table-budgets").querySelectorAll("tbody tr");
  budgets.rows.forEach((b, i) => { if (b.hot && rows[i]) rows[i].classList.add("hot"); });
}

async function loadAlerts() {
  const events = await api("events", { limit: "50" });
  fill($("#table-alerts"), events.rows, [
    [(e) => e.at.replace("T", " ").replace("Z", "")], [(e) => e.outcome], [(e) => e.tenant], [(e) => e.user], [(e) => e.feature],
    [(e) => (e.requested_model && e.requested_model !== e.model ? e.requested_model + " \u2192 " : "") + (e.model || "")],
    [(e) => money(e.estimate_usd), "num"], [(e) => money(e.cost_usd), "num"], [(e) => e.error]]);
}

async function loadWhatIf() {
  const to = $("#whatif-to").value.trim();
  const table = $("#table-whatif");
  const dim = $("#f-dim").value;
  if (!to || (dim && dim !== "feature" && $("#f-value").value.trim())) {
    table.querySelector("thead tr").replaceChildren();
    table.querySelector("tbody").replaceChildren();
    return;
  }
  const found = await api("whatif", { to: to });
  const head = table.querySelector("thead tr");
  head.replaceChildren();
  const titles = [["Feature"], ["Calls", "num"], ["Paid", "num"], ["Latency", "num"]];
  for (const t of found.targets) titles.push([t, "num"], ["vs paid", "num"], ["latency", "num"]);
  for (const [text, cls] of titles) {
    const th = document.createElement("th");
    th.textContent = text;
    if (cls) th.className = cls;
    head.appendChild(th);
  }
  const seconds = (s) => (s === null ? "-" : s + " s");
  const columns = [[(r) => r.key], [(r) => count(r.calls), "num"], [(r) => money(r.usd), "num"], [(r) => seconds(r.avg_latency_s), "num"]];
  found.targets.forEach((_, i) => columns.push(
    [(r) => money(r.targets[i].usd), "num"],
    [(r) => (r.targets[i].ratio === null ? "-" : "x" + Number(r.targets[i].ratio).toFixed(2)), "num"],
    [(r) => seconds(r.targets[i].avg_latency_s), "num"]));
  fill(table, [...found.rows, found.total], columns);
}

async function refresh() {
  const problem = $("#problem");
  const results = await Promise.allSettled([loadSpend(), loadBreakdowns(), loadSavings(), loadBudgets(), loadAlerts(), loadWhatIf()]);
  const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason.message);
  problem.hidden = failed.length === 0;
  problem.textContent = failed.length ? "Could not load: " + [...new Set(failed)].join("; ") : "";
  $("#updated").textContent = "updated " + new Date().toLocaleTimeString() + (meta.refresh_s ? ", every " + meta.refresh_s + " s" : "");
  document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
  if (refreshTimer) clearTimeout(refreshTimer);
  if (meta.refresh_s) refreshTimer = setTimeout(refresh, meta.refresh_s * 1000);
}

function show(view) {
  if (!VIEWS.includes(view)) view = "spend";
  for (const v of VIEWS) {
    document.getElementById("view-" + v).classList.toggle("active", v === view);
    document.querySelector("nav a[data-view=" + v + "]").classList.toggle("active", v === view);
  }
}

async function start() {
  try { meta = await fetch("/api/meta").then((r) => r.json()); } catch (e) { meta = { refresh_s: 30 }; }
  document.title = (meta.title || "budgetguard") + " dashboard";
  show(location.hash.slice(1));
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  $("#filters").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
  $("#whatif-form").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
  for (const id of ["#f-since", "#f-bucket", "#f-by"]) $(id).addEventListener("change", refresh);
  await refresh();
}

document.addEventListener("DOMContentLoaded", start);
