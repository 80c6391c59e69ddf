// DistriQueue dashboard: plain ES module, no build step, nothing loaded from outside the gateway.
// Views are chosen by the URL's hash (#/jobs?jobStatus=FAILED, #/jobs/<id>, ...) so every view
// is a deep link. Live updates come from the gateway's SSE stream (read with fetch, so the API
// key travels in a header); views refetch at most every REFRESH_MS when events arrive.

const REFRESH_MS = 2000;
const STATUSES = ["PENDING", "QUEUED", "RUNNING", "RETRYING", "COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"];
const PRIORITIES = ["CRITICAL", "HIGH", "MEDIUM", "LOW"];
const SORT_KEYS = ["createdAt", "priority", "status", "type", "startedAt", "completedAt"];
const KEY_STORE = "distriqueue.apiKey";
const COPY_STORE = "distriqueue.copy";
const BULK_MAX = 1000; // most jobs one bulk action on a filter takes

const main = document.getElementById("main");
const auth = { keyRequired: false, roles: [], publicReads: false };
let view = null; // { stop(): void } of the current view

// ---------- small helpers ----------

/** Makes an element: h("a", {href: "#"}, "text", child...). Text is always text, never HTML. */
function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

function badge(status) {
  return h("span", { class: `badge s-${status}` }, status);
}

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

function ms(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (value < 1000) return `${Math.round(value)} ms`;
  if (value < 60000) return `${(value / 1000).toFixed(1)} s`;
  return `${(value / 60000).toFixed(1)} min`;
}

function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => box.classList.remove("show"), 5000);
}

function can(role) {
  if (!auth.keyRequired) return true;
  return auth.roles.includes(role) || auth.roles.includes("admin");
}

function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

// ---------- the API ----------

class ApiError extends Error {
  constructor(status, body) {
    let message = (body && body.error) || `HTTP ${status}`;
    if (body && body.violations) {
      message += ": " + Object.entries(body.violations).map(([field, why]) => `${field} ${why}`).join("; ");
    }
    super(message);
    this.status = status;
    this.body = body;
  }
}

function headers(extra = {}) {
  const all = { Accept: "application/json", ...extra };
  const key = apiKey();
  if (key) all.Authorization = `Bearer ${key}`;
  return all;
}

/** Calls the gateway; resolves to the JSON answer, rejects with ApiError. A 401 asks for a key. */
async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }), signal };
  if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
  const response = await fetch(path, init);
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = { error: text }; }
  if (response.status === 401) askKey("The gateway asks for an API key.");
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}

/**
 * Follows GET /api/jobs/stream (filtered by `params`), calling onUpdate(data) for each
 * job-update; reconnects with Last-Event-ID after a break. Returns a stop function.
 */
function subscribe(params, onUpdate) {
  const controller = new AbortController();
  let lastId = null;
  let delay = 500;
  const live = document.getElementById("live");
  live.hidden = false;
  live.textContent = "connecting";
  (async () => {
    while (!controller.signal.aborted) {
      try {
        const query = new URLSearchParams(params).toString();
        const extra = { Accept: "text/event-stream" };
        if (lastId) extra["Last-Event-ID"] = lastId;
        const response = await fetch(`/api/jobs/stream${query ? "?" + query : ""}`, {
          headers: { ...headers(), ...extra }, signal: controller.signal,
        });
        if (response.status === 401) askKey("The gateway asks for an API key.");
        if (!response.ok || !response.body) {
          if (response.body) await response.body.cancel();
          if (response.status >= 400 && response.status < 500 && ![408, 429].includes(response.status)) {
            // Asking again will not help (a bad filter, a key without the role).
            live.textContent = `no live updates (HTTP ${response.status})`;
            return;
          }
          throw new Error(`stream: HTTP ${response.status}`);
        }
        live.textContent = "live";
        live.classList.add("on");
        delay = 500;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let event = "message";
            let data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) event = line.slice(6).trim();
              else if (line.startsWith("data:")) data += line.slice(5).trim();
              else if (line.startsWith("id:")) lastId = line.slice(3).trim();
            }
            if (event === "job-update" && data) {
              try { onUpdate(JSON.parse(data)); } catch (error) { console.warn("bad job-update", error); }
            }
          }
        }
      } catch (error) {
        if (controller.signal.aborted) return;
      }
      live.textContent = "reconnecting";
      live.classList.remove("on");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();
  return () => controller.abort();
}

/** Runs `refresh` now, then again at most every REFRESH_MS while `poke` is called. */
function throttled(refresh) {
  let timer = null;
  let stopped = false;
  const poke = () => {
    if (timer || stopped) return;
    timer = setTimeout(async () => {
      timer = null;
      if (!stopped) await refresh();
    }, REFRESH_MS);
  };
  return { poke, stop: () => { stopped = true; clearTimeout(timer); } };
}

/**
 * Runs `refresh` now and then `ms` after each run has settled (never two at once, so a slow
 * answer cannot overwrite a newer one). Returns the view's stop().
 */
function every(ms, refresh) {
  let stopped = false;
  let timer = null;
  const run = async () => {
    await refresh();
    if (!stopped) timer = setTimeout(run, ms);
  };
  run();
  return { stop() { stopped = true; clearTimeout(timer); } };
}

// ---------- API key ----------

function askKey(why) {
  const dialog = document.getElementById("key-dialog");
  if (dialog.open) return;
  document.getElementById("key-why").textContent = why;
  document.getElementById("key-error").textContent = "";
  document.getElementById("key-input").value = "";
  dialog.showModal();
}

async function loadAuth() {
  try {
    const answer = await api("/api/auth");
    Object.assign(auth, answer);
  } catch (error) {
    Object.assign(auth, { keyRequired: true, roles: [] });
  }
  const roles = document.getElementById("roles");
  roles.textContent = auth.keyRequired ? (auth.roles.length ? `roles: ${auth.roles.join(", ")}` : "no key") : "";
  document.getElementById("key-button").hidden = !auth.keyRequired;
}

function setUpKeyDialog() {
  const dialog = document.getElementById("key-dialog");
  document.getElementById("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, document.getElementById("key-input").value.trim());
    await loadAuth();
    if (auth.keyRequired && !auth.roles.length) {
      document.getElementById("key-error").textContent = "That key is not known here.";
      return;
    }
    dialog.close();
    route();
  });
  document.getElementById("key-forget").addEventListener("click", async () => {
    sessionStorage.removeItem(KEY_STORE);
    dialog.close();
    await loadAuth();
    route();
  });
  document.getElementById("key-button").addEventListener("click", () => askKey("Change the API key."));
}

// ---------- charts ----------

/** A line chart of `series` ([{name, color, points: [[x, y]...]}]) as inline SVG. */
function lineChart(series, { label, unit = "" } = {}) {
  const width = 600;
  const height = 180;
  const pad = 28;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const minX = Math.min(...xs, Date.now() - 3600e3);
  const maxX = Math.max(...xs, Date.now());
  const maxY = Math.max(1, ...ys);
  const x = (value) => pad + ((value - minX) / Math.max(1, maxX - minX)) * (width - pad - 8);
  const y = (value) => height - pad + 8 - (value / maxY) * (height - pad - 8);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label || "chart");
  const line = (x1, y1, x2, y2, color) => {
    const element = document.createElementNS(ns, "line");
    Object.entries({ x1, y1, x2, y2, stroke: color, "stroke-width": 1 }).forEach(([k, v]) => element.setAttribute(k, v));
    svg.append(element);
  };
  const text = (tx, ty, content, anchor = "start") => {
    const element = document.createElementNS(ns, "text");
    Object.entries({ x: tx, y: ty, "font-size": 11, fill: "#4a5260", "text-anchor": anchor }).forEach(([k, v]) => element.setAttribute(k, v));
    element.textContent = content;
    svg.append(element);
  };
  line(pad, y(0), width - 8, y(0), "#d0d5dd");
  line(pad, y(maxY), width - 8, y(maxY), "#eceff3");
  text(pad - 4, y(maxY) + 4, `${Math.round(maxY * 10) / 10}${unit}`, "end");
  text(pad - 4, y(0) + 4, "0", "end");
  text(pad, height - 4, new Date(minX).toLocaleTimeString());
  text(width - 8, height - 4, new Date(maxX).toLocaleTimeString(), "end");
  for (const s of series) {
    if (!s.points.length) continue;
    const path = document.createElementNS(ns, "polyline");
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", s.color);
    path.setAttribute("stroke-width", 2);
    path.setAttribute("points", s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "));
    svg.append(path);
  }
  const legend = h("div", { class: "legend" }, series.map((s) => {
    const item = h("span", {}, s.name);
    item.style.setProperty("--c", s.color);
    return item;
  }));
  return h("div", {}, svg, legend);
}

// ---------- views ----------

function page(title, ...children) {
  main.replaceChildren(h("h1", {}, title), ...children);
  document.title = `${title} · DistriQueue`;
}

function errorPanel(error) {
  return h("p", { class: "error", role: "alert" }, String(error.message || error));
}

function overviewView() {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  page("Overview", body);
  const refresh = async () => {
    try {
      const [stats, timeline, workers] = await Promise.all([
        api("/api/jobs/statistics"),
        api("/api/jobs/timeline?minutes=60"),
        api("/api/workers").catch(() => ({ workers: [] })),
      ]);
      const counts = {
        PENDING: stats.pendingJobs, QUEUED: stats.queuedJobs, RUNNING: stats.runningJobs,
        RETRYING: stats.retryingJobs, COMPLETED: stats.completedJobs, FAILED: stats.failedJobs,
        TIMEOUT: stats.timeoutJobs, CANCELLED: stats.cancelledJobs,
      };
      const cards = h("div", { class: "cards", id: "status-counts" },
        h("div", { class: "card", "data-status": "ALL" }, h("div", { class: "n" }, stats.totalJobs), h("div", { class: "label" }, "all jobs")),
        STATUSES.map((status) => h("a", { class: "card", href: `#/jobs?jobStatus=${status}`, "data-status": status },
          h("div", { class: "n" }, counts[status] ?? 0), h("div", { class: "label" }, status.toLowerCase()))));
      const byPriority = stats.jobsByPriority || {};
      const maxPriority = Math.max(1, ...Object.values(byPriority));
      const waitingBy = timeline.waitingByPriority || {};
      const priorities = h("table", { class: "bars" },
        h("thead", {}, h("tr", {}, h("th", {}, "priority"), h("th", {}, "jobs"), h("th", {}, "waiting"), h("th", {}, ""))),
        h("tbody", {}, PRIORITIES.map((p) => h("tr", {},
        h("th", { scope: "row" }, p), h("td", { "data-priority": p }, byPriority[p] ?? 0),
        h("td", { "data-waiting": p }, waitingBy[p] ?? 0),
        h("td", {}, (() => { const bar = h("div", { class: "bar" }); bar.style.width = `${((byPriority[p] ?? 0) / maxPriority) * 100}%`; return bar; })())))));
      const seconds = timeline.bucketSeconds || 60;
      // Every bucket of the hour, idle ones at 0 (the answer lists only buckets with jobs); the
      // current bucket's rate is over the seconds it has run so far.
      const byStart = new Map((timeline.buckets || []).map((b) => [Date.parse(b.at), b]));
      const step = seconds * 1000;
      const now = Date.now();
      const current = Math.floor(now / step) * step;
      const points = [];
      for (let at = current - 59 * step; at <= current; at += step) {
        const bucket = byStart.get(at) || { submitted: 0, completed: 0, failed: 0 };
        const span = at === current ? Math.max(1, (now - current) / 1000) : seconds;
        points.push({ at, bucket, span });
      }
      const perSecond = (field) => points.map((p) => [p.at, p.bucket[field] / p.span]);
      const throughput = lineChart([
        { name: "submitted/s", color: "#0b57d0", points: perSecond("submitted") },
        { name: "completed/s", color: "#146c2e", points: perSecond("completed") },
        { name: "failed/s", color: "#b3261e", points: perSecond("failed") },
      ], { label: "Jobs per second over the last hour" });
      const latencyRow = (name, p) => h("tr", {}, h("th", { scope: "row" }, name),
        h("td", {}, ms(p?.p50)), h("td", {}, ms(p?.p90)), h("td", {}, ms(p?.p99)), h("td", {}, ms(p?.max)));
      const latency = h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, "p50"), h("th", {}, "p90"), h("th", {}, "p99"), h("th", {}, "max"))),
        h("tbody", {}, latencyRow("queue time", timeline.queueTimeMs), latencyRow("execution time", timeline.executionTimeMs)));
      const waiting = (counts.PENDING || 0) + (counts.QUEUED || 0) + (counts.RETRYING || 0);
      const alive = (workers.workers || []).filter((w) => w.alive);
      body.replaceChildren(
        h("section", { class: "panel", "aria-labelledby": "h-status" }, h("h2", { id: "h-status" }, "Jobs by status"), cards),
        h("div", { class: "grid" },
          h("section", { class: "panel", "aria-labelledby": "h-through" }, h("h2", { id: "h-through" }, "Throughput, last hour"), throughput),
          h("section", { class: "panel", "aria-labelledby": "h-lat" }, h("h2", { id: "h-lat" }, `Latency of the jobs finished in the last hour (${timeline.finishedJobs ?? 0})`), latency),
          h("section", { class: "panel", "aria-labelledby": "h-prio" }, h("h2", { id: "h-prio" }, "Jobs and queues by priority"), priorities),
          h("section", { class: "panel", "aria-labelledby": "h-wait" }, h("h2", { id: "h-wait" }, "Now"),
            h("dl", { class: "fields" },
              h("dt", {}, "waiting"), h("dd", { id: "waiting" }, waiting),
              h("dt", {}, "running"), h("dd", {}, counts.RUNNING || 0),
              h("dt", {}, "workers alive"), h("dd", { id: "workers-alive" }, alive.length),
              h("dt", {}, "slots busy"), h("dd", {}, `${alive.reduce((n, w) => n + (w.busy || 0), 0)} of ${alive.reduce((n, w) => n + (w.slots || 0), 0)}`),
              h("dt", {}, "success rate"), h("dd", {}, `${(stats.successRate ?? 0).toFixed(1)} %`)))));
    } catch (error) {
      body.replaceChildren(errorPanel(error));
    }
  };
  const timer = throttled(refresh);
  refresh();
  const unsubscribe = subscribe({}, timer.poke);
  return { stop() { timer.stop(); unsubscribe(); } };
}

function jobsQuery() {
  const [, query = ""] = location.hash.split("?");
  return new URLSearchParams(query);
}

function jobsView() {
  const query = jobsQuery();
  const field = (name, label, control) => h("div", {}, h("label", { for: `f-${name}` }, label), control);
  const select = (name, options, value) => h("select", { id: `f-${name}`, name },
    h("option", { value: "" }, "any"), options.map((o) => h("option", { value: o, selected: o === value }, o)));
  const input = (name, type = "text", extra = {}) => h("input", { id: `f-${name}`, name, type, value: query.get(name) || "", ...extra });
  const form = h("form", { class: "filters", role: "search" },
    field("id", "Job id", input("id", "search", { placeholder: "uuid", size: 36 })),
    field("jobStatus", "Status", select("jobStatus", STATUSES, query.get("jobStatus"))),
    field("type", "Type", input("type")),
    field("jobPriority", "Priority", select("jobPriority", PRIORITIES, query.get("jobPriority"))),
    field("workerId", "Worker", input("workerId")),
    field("tag", "Tag", input("tag")),
    field("createdFrom", "Created from", input("createdFrom", "datetime-local", { step: 1 })),
    field("createdTo", "Created to", input("createdTo", "datetime-local", { step: 1 })),
    field("sortBy", "Sort by", h("select", { id: "f-sortBy", name: "sortBy" }, SORT_KEYS.map((k) => h("option", { value: k, selected: k === (query.get("sortBy") || "createdAt") }, k)))),
    field("sortDirection", "Order", h("select", { id: "f-sortDirection", name: "sortDirection" },
      ["desc", "asc"].map((d) => h("option", { value: d, selected: d === (query.get("sortDirection") || "desc") }, d)))),
    field("size", "Per page", h("select", { id: "f-size", name: "size" }, ["20", "50", "100"].map((s) => h("option", { value: s, selected: s === (query.get("size") || "20") }, s)))),
    h("button", { type: "submit", class: "primary" }, "Apply"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const id = String(data.get("id") || "").trim();
    if (id) { location.hash = `#/jobs/${encodeURIComponent(id)}`; return; }
    const next = new URLSearchParams();
    for (const [name, value] of data.entries()) {
      if (name === "id" || !value) continue;
      next.set(name, value);
    }
    location.hash = `#/jobs?${next}`;
  });
  const results = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  page("Jobs", h("section", { class: "panel" }, form), h("section", { class: "panel" }, results));
  const selected = new Set();
  const rows = new Map();
  const refresh = async () => {
    const params = new URLSearchParams();
    for (const name of ["jobStatus", "type", "jobPriority", "workerId", "tag", "sortBy", "sortDirection", "size", "page"]) {
      if (query.get(name)) params.set(name, query.get(name));
    }
    try {
      for (const name of ["createdFrom", "createdTo"]) {
        const when = query.get(name) ? new Date(query.get(name)) : null;
        if (when && Number.isNaN(when.getTime())) throw new Error(`${name}: not a date`);
        if (when) params.set(name, when.toISOString());
      }
      const answer = await api(`/api/jobs?${params}`);
      rows.clear();
      const checkAll = h("input", { type: "checkbox", "aria-label": "Select every job of this page" });
      const tbody = h("tbody", {}, answer.content.map((job) => {
        const box = h("input", { type: "checkbox", "aria-label": `Select job ${job.id}`, checked: selected.has(job.id) });
        box.addEventListener("change", () => { box.checked ? selected.add(job.id) : selected.delete(job.id); updateBulk(); });
        const status = h("td", {}, badge(job.jobStatus));
        const row = h("tr", { "data-id": job.id },
          h("td", {}, box),
          h("td", { class: "mono" }, h("a", { href: `#/jobs/${job.id}` }, job.id)),
          h("td", {}, job.type), h("td", {}, job.jobPriority), status,
          h("td", { class: "hide-narrow" }, job.workerId || ""),
          h("td", { class: "hide-narrow" }, when(job.created_at)),
          h("td", { class: "hide-narrow" }, job.attempt));
        rows.set(job.id, { status, box });
        return row;
      }));
      checkAll.addEventListener("change", () => {
        for (const [id, row] of rows) { row.box.checked = checkAll.checked; checkAll.checked ? selected.add(id) : selected.delete(id); }
        updateBulk();
      });
      const info = answer.page;
      const go = (number) => { const next = new URLSearchParams(query); next.set("page", number); location.hash = `#/jobs?${next}`; };
      const count = h("span", { id: "selected-count" }, "");
      const retry = h("button", { type: "button", disabled: true }, "Retry selected");
      const cancel = h("button", { type: "button", class: "danger", disabled: true }, "Cancel selected");
      const updateBulk = () => {
        count.textContent = `${selected.size} selected`;
        retry.disabled = cancel.disabled = selected.size === 0;
      };
      retry.addEventListener("click", () => bulk("retry", [...selected]).then(() => { selected.clear(); refresh(); }));
      cancel.addEventListener("click", () => bulk("cancel", [...selected]).then(() => { selected.clear(); refresh(); }));
      updateBulk();
      // Every job the filter matches (up to BULK_MAX), after a second click to confirm.
      const everyMatch = (action, label) => {
        const button = h("button", { type: "button", class: action === "cancel" ? "danger" : "", id: `${action}-all`, disabled: info.totalElements === 0 },
          `${label} all ${Math.min(info.totalElements, BULK_MAX)} matching`);
        let armed = false;
        button.addEventListener("click", async () => {
          if (!armed) { armed = true; button.textContent = `Click again to ${action} ${Math.min(info.totalElements, BULK_MAX)} jobs`; return; }
          button.disabled = true;
          try { await bulk(action, await matchingIds(params)); } catch (error) { toast(`${action}: ${error.message}`); }
          refresh();
        });
        return button;
      };
      const retryAll = everyMatch("retry", "Retry");
      const cancelAll = everyMatch("cancel", "Cancel");
      results.replaceChildren(
        h("p", { id: "total", "data-total": info.totalElements }, `${info.totalElements} jobs`),
        can("client") ? h("div", { class: "actions" }, count, retry, cancel, retryAll, cancelAll) : null,
        h("div", { class: "table-wrap" }, h("table", { id: "jobs" },
          h("thead", {}, h("tr", {}, h("th", {}, checkAll), h("th", {}, "id"), h("th", {}, "type"), h("th", {}, "priority"), h("th", {}, "status"),
            h("th", { class: "hide-narrow" }, "worker"), h("th", { class: "hide-narrow" }, "created"), h("th", { class: "hide-narrow" }, "attempt"))),
          tbody)),
        h("nav", { class: "pager", "aria-label": "Pages" },
          h("button", { type: "button", disabled: info.number === 0, onclick: () => go(info.number - 1) }, "Previous"),
          h("span", { id: "page-number" }, `page ${info.number + 1} of ${Math.max(1, info.totalPages)}`),
          h("button", { type: "button", disabled: info.number + 1 >= info.totalPages, onclick: () => go(info.number + 1) }, "Next")));
    } catch (error) {
      results.replaceChildren(errorPanel(error));
    }
  };
  refresh();
  const unsubscribe = subscribe(query.get("type") ? { type: query.get("type") } : {}, (update) => {
    const row = rows.get(update.jobId);
    if (row) row.status.replaceChildren(badge(update.status));
  });
  return { stop: unsubscribe };
}

/** The ids of the jobs `params` match (as GET /api/jobs filters), at most BULK_MAX. */
async function matchingIds(params) {
  const ids = new Set(); // pages shift as jobs arrive: a job seen twice counts once
  for (let page = 0; ids.size < BULK_MAX; page += 1) {
    const query = new URLSearchParams(params);
    query.set("size", "100");
    query.set("page", String(page));
    const answer = await api(`/api/jobs?${query}`);
    answer.content.forEach((job) => ids.add(job.id));
    if (!answer.content.length || page + 1 >= answer.page.totalPages) break;
  }
  return [...ids].slice(0, BULK_MAX);
}

/** Retries or cancels `ids`, four at a time; reports how many went through. */
async function bulk(action, ids) {
  let done = 0;
  const failures = [];
  const queue = [...ids];
  const next = async () => {
    while (queue.length) {
      const id = queue.shift();
      try { await api(`/api/jobs/${id}/${action}`, { method: "POST" }); done += 1; } catch (error) { failures.push(`${id}: ${error.message}`); }
    }
  };
  await Promise.all([next(), next(), next(), next()]);
  toast(`${action}: ${done} of ${ids.length} done${failures.length ? "\n" + failures.slice(0, 5).join("\n") : ""}`);
}

function jobView(id) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  page(`Job ${id}`, body);
  const events = [];
  const refresh = async () => {
    try {
      const job = await api(`/api/jobs/${encodeURIComponent(id)}`);
      const attempts = job.attempts || []; // absent until the first dispatch (a PENDING job)
      const actions = h("div", { class: "actions" });
      if (can("client")) {
        if (["FAILED", "TIMEOUT", "CANCELLED"].includes(job.jobStatus)) {
          actions.append(h("button", { type: "button", class: "primary", id: "retry", onclick: () => act("retry") }, "Retry"));
        }
        if (!["COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"].includes(job.jobStatus)) {
          actions.append(h("button", { type: "button", class: "danger", id: "cancel", onclick: () => act("cancel") }, "Cancel"));
        }
        actions.append(h("button", { type: "button", id: "copy", onclick: () => copy(job) }, "Submit a copy"));
      }
      const timeline = [
        ["created", job.created_at],
        ...attempts.flatMap((a) => [
          a.startedAt ? [`attempt ${a.attempt} started on ${a.workerId || "?"}`, a.startedAt] : null,
          a.endedAt ? [`attempt ${a.attempt} ${a.state.toLowerCase()}${a.errorMessage ? ": " + a.errorMessage : ""}`, a.endedAt] : null,
        ].filter(Boolean)),
        ...events.map((e) => [`${e.status}${e.progress !== undefined ? ` ${e.progress} %` : ""}${e.errorMessage ? ": " + e.errorMessage : ""} (live)`, e.timestamp]),
      ].sort((a, b) => Date.parse(a[1]) - Date.parse(b[1]));
      body.replaceChildren(
        actions,
        h("div", { class: "grid" },
          h("section", { class: "panel", "aria-labelledby": "h-job" }, h("h2", { id: "h-job" }, "Job"),
            h("dl", { class: "fields" },
              h("dt", {}, "status"), h("dd", { id: "job-status" }, badge(job.jobStatus)),
              h("dt", {}, "type"), h("dd", {}, job.type),
              h("dt", {}, "priority"), h("dd", {}, job.jobPriority),
              h("dt", {}, "attempt"), h("dd", {}, `${job.attempt} (retries ${job.retryCount} of ${job.maxRetries})`),
              h("dt", {}, "worker"), h("dd", {}, job.workerId || "–"),
              h("dt", {}, "progress"), h("dd", {}, job.progress === undefined ? "–" : h("progress", { max: 100, value: job.progress, "aria-label": "progress" }, `${job.progress} %`)),
              h("dt", {}, "created"), h("dd", {}, when(job.created_at)),
              h("dt", {}, "started"), h("dd", {}, when(job.started_at) || "–"),
              h("dt", {}, "finished"), h("dd", {}, when(job.completed_at) || "–"),
              h("dt", {}, "queue time"), h("dd", {}, ms(job.queue_time_ms)),
              h("dt", {}, "execution time"), h("dd", {}, ms(job.execution_time_ms)),
              h("dt", {}, "tags"), h("dd", {}, (job.tags || []).join(", ") || "–"),
              h("dt", {}, "parent"), h("dd", {}, job.parentJobId ? h("a", { href: `#/jobs/${job.parentJobId}` }, job.parentJobId) : "–"))),
          h("section", { class: "panel", "aria-labelledby": "h-timeline" }, h("h2", { id: "h-timeline" }, "Timeline"),
            h("ol", { class: "timeline" }, timeline.map(([what, at]) => h("li", {}, h("span", { class: "muted" }, when(at)), " ", what))))),
        h("section", { class: "panel", "aria-labelledby": "h-attempts" }, h("h2", { id: "h-attempts" }, "Attempts"),
          h("div", { class: "table-wrap" }, h("table", { id: "attempts" },
            h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "worker"), h("th", {}, "state"), h("th", {}, "started"), h("th", {}, "ended"), h("th", {}, "error"))),
            h("tbody", {}, attempts.map((a) => h("tr", {}, h("td", {}, a.attempt), h("td", {}, a.workerId || ""), h("td", {}, badge(a.state)),
              h("td", {}, when(a.startedAt)), h("td", {}, when(a.endedAt)), h("td", { class: "error" }, a.errorMessage || ""))))))),
        h("div", { class: "grid" },
          h("section", { class: "panel", "aria-labelledby": "h-payload" }, h("h2", { id: "h-payload" }, "Payload"), h("pre", {}, JSON.stringify(job.payload, null, 2))),
          job.result !== undefined ? h("section", { class: "panel", "aria-labelledby": "h-result" }, h("h2", { id: "h-result" }, "Result"), h("pre", { id: "result" }, JSON.stringify(job.result, null, 2))) : null,
          job.errorMessage ? h("section", { class: "panel", "aria-labelledby": "h-error" }, h("h2", { id: "h-error" }, "Error"), h("pre", { class: "error" }, job.errorMessage)) : null,
          Object.keys(job.metadata || {}).length ? h("section", { class: "panel", "aria-labelledby": "h-meta" }, h("h2", { id: "h-meta" }, "Metadata"), h("pre", {}, JSON.stringify(job.metadata, null, 2))) : null));
    } catch (error) {
      body.replaceChildren(errorPanel(error));
    }
  };
  const act = async (action) => {
    try { await api(`/api/jobs/${encodeURIComponent(id)}/${action}`, { method: "POST" }); toast(`${action}: done`); } catch (error) { toast(`${action}: ${error.message}`); }
    refresh();
  };
  const timer = throttled(refresh);
  refresh();
  const unsubscribe = subscribe({ jobId: id }, (update) => { events.push(update); timer.poke(); });
  return { stop() { timer.stop(); unsubscribe(); } };
}

function copy(job) {
  const request = { type: job.type, jobPriority: job.jobPriority, payload: job.payload, maxRetries: job.maxRetries, executionTimeout: job.executionTimeout };
  if (job.tags && job.tags.length) request.tags = job.tags;
  if (job.metadata && Object.keys(job.metadata).length) request.metadata = job.metadata;
  sessionStorage.setItem(COPY_STORE, JSON.stringify(request));
  location.hash = "#/submit";
}

function deadLettersView() {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  page("Dead letters", h("p", { class: "muted" }, "FAILED and TIMEOUT jobs, grouped by type and error."), body);
  const refresh = async () => {
    try {
      const answer = await api("/api/dead-letters");
      if (!answer.groups.length) { body.replaceChildren(h("p", {}, "No failed jobs.")); return; }
      body.replaceChildren(h("div", { class: "table-wrap" }, h("table", { id: "dead-letters" },
        h("thead", {}, h("tr", {}, h("th", {}, "type"), h("th", {}, "status"), h("th", {}, "error"), h("th", {}, "jobs"), h("th", {}, "last"), h("th", {}, ""))),
        h("tbody", {}, answer.groups.map((group) => h("tr", {},
          h("td", {}, group.type), h("td", {}, badge(group.status)), h("td", { class: "error" }, group.errorMessage || "(none)"),
          h("td", {}, h("a", { href: `#/jobs?jobStatus=${group.status}&type=${encodeURIComponent(group.type)}` }, group.count)),
          h("td", {}, when(group.lastAt)),
          h("td", {}, can("client") ? h("button", { type: "button", class: "primary", onclick: () => retryGroup(group) }, `Retry ${group.count}`) : "")))))));
    } catch (error) {
      body.replaceChildren(errorPanel(error));
    }
  };
  const retryGroup = async (group) => {
    let retried = 0;
    let refused = 0;
    let after = null;
    try {
      // The group a page at a time, by id: each job once, also when one fails again at once.
      for (;;) {
        const body = { type: group.type, status: group.status, errorMessage: group.errorMessage ?? null };
        if (after) body.after = after;
        const answer = await api("/api/dead-letters/retry", { method: "POST", body });
        retried += answer.retried;
        refused += Object.keys(answer.refused || {}).length;
        if (!answer.remaining || !answer.last) break;
        after = answer.last;
      }
      toast(`retried ${retried} jobs${refused ? `, ${refused} refused` : ""}`);
    } catch (error) {
      toast(`retry: ${error.message}`);
    }
    refresh();
  };
  // Grouping reads every failed job: every 10 s, not on every event.
  polling(10);
  return every(10000, refresh);
}

function workersView() {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  page("Workers", body);
  const refresh = async () => {
    try {
      const answer = await api("/api/workers");
      if (!answer.workers.length) { body.replaceChildren(h("p", {}, "No worker has sent a heartbeat to the leader.")); return; }
      body.replaceChildren(h("div", { class: "table-wrap" }, h("table", { id: "workers" },
        h("thead", {}, h("tr", {}, h("th", {}, "worker"), h("th", {}, "state"), h("th", {}, "slots"), h("th", {}, "load"), h("th", {}, "completed"), h("th", {}, "failed"), h("th", {}, "last heartbeat"))),
        h("tbody", {}, answer.workers.map((w) => h("tr", {},
          h("td", { class: "mono" }, w.workerId), h("td", {}, w.alive ? "alive" : h("span", { class: "lost" }, "lost")),
          h("td", {}, w.slots), h("td", {}, `${w.busy} busy`), h("td", {}, w.completed), h("td", {}, w.failed), h("td", {}, when(w.lastHeartbeatAt))))))));
    } catch (error) {
      body.replaceChildren(errorPanel(error));
    }
  };
  polling(5);
  return every(5000, refresh);
}

function clusterView() {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  page("Cluster", body);
  const refresh = async () => {
    try {
      const answer = await api("/api/cluster");
      body.replaceChildren(h("div", { class: "table-wrap" }, h("table", { id: "cluster" },
        h("thead", {}, h("tr", {}, h("th", {}, "node"), h("th", {}, "API"), h("th", {}, "role"), h("th", {}, "term"), h("th", {}, "commit"), h("th", {}, "applied"), h("th", {}, "lag"), h("th", {}, "reachable"))),
        h("tbody", {}, answer.nodes.map((n) => h("tr", { "data-node": n.nodeId, "data-role": n.role || "" },
          h("td", {}, n.leader ? h("span", { class: "leader" }, `${n.nodeId} ★ leader`) : n.nodeId),
          h("td", { class: "mono" }, n.url), h("td", {}, n.role || "–"), h("td", {}, n.term ?? "–"),
          h("td", {}, n.commitIndex ?? "–"), h("td", {}, n.appliedIndex ?? "–"), h("td", {}, n.lag ?? "–"),
          h("td", {}, n.reachable ? "yes" : h("span", { class: "lost" }, n.error ? `no: ${n.error}` : "no"))))))));
    } catch (error) {
      body.replaceChildren(errorPanel(error));
    }
  };
  polling(1);
  return every(1000, refresh);
}

function submitView() {
  const copied = sessionStorage.getItem(COPY_STORE);
  sessionStorage.removeItem(COPY_STORE);
  const start = copied ? JSON.parse(copied) : { type: "echo", jobPriority: "MEDIUM", payload: {} };
  const message = h("p", { class: "error", role: "alert", id: "submit-error" });
  const form = h("form", { id: "submit-form", novalidate: true },
    h("div", { class: "grid" },
      h("div", {}, h("label", { for: "s-type" }, "Type"), h("input", { id: "s-type", name: "type", required: true, maxlength: 255, value: start.type || "" })),
      h("div", {}, h("label", { for: "s-priority" }, "Priority"), h("select", { id: "s-priority", name: "jobPriority" },
        PRIORITIES.map((p) => h("option", { value: p, selected: p === (start.jobPriority || "MEDIUM") }, p)))),
      h("div", {}, h("label", { for: "s-retries" }, "Max retries"), h("input", { id: "s-retries", name: "maxRetries", type: "number", min: 0, max: 100, value: start.maxRetries ?? "" })),
      h("div", {}, h("label", { for: "s-schedule" }, "Run at (optional)"), h("input", { id: "s-schedule", name: "scheduleAt", type: "datetime-local", step: 1 })),
      h("div", {}, h("label", { for: "s-key" }, "Idempotency key (optional)"), h("input", { id: "s-key", name: "idempotencyKey", maxlength: 255 }))),
    h("div", {}, h("label", { for: "s-payload" }, "Payload (a JSON object)"),
      h("textarea", { id: "s-payload", name: "payload", rows: 8 }, JSON.stringify(start.payload || {}, null, 2))),
    message,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Submit")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.textContent = "";
    const data = new FormData(form);
    let payload;
    try {
      payload = JSON.parse(String(data.get("payload") || "{}"));
      if (payload === null || typeof payload !== "object" || Array.isArray(payload)) throw new Error("the payload must be a JSON object");
    } catch (error) {
      message.textContent = `Payload: ${error.message}`;
      return;
    }
    const request = { ...start, type: String(data.get("type")).trim(), jobPriority: data.get("jobPriority"), payload };
    const retries = String(data.get("maxRetries") || "");
    if (retries) request.maxRetries = Number(retries); else delete request.maxRetries;
    const at = String(data.get("scheduleAt") || "");
    if (at) request.scheduleAt = new Date(at).toISOString();
    const key = String(data.get("idempotencyKey") || "").trim();
    if (key) request.idempotencyKey = key;
    try {
      const job = await api("/api/jobs", { method: "POST", body: request });
      location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      message.textContent = error.message;
    }
  });
  const batchMessage = h("p", { role: "status", id: "batch-result" });
  const lines = h("textarea", { id: "b-lines", rows: 6, placeholder: '{"type": "echo", "jobPriority": "LOW"}' });
  const file = h("input", { id: "b-file", type: "file", accept: ".jsonl,.json,.txt,application/json" });
  file.addEventListener("change", async () => { if (file.files[0]) lines.value = await file.files[0].text(); });
  const batch = h("form", { id: "batch-form" },
    h("label", { for: "b-file" }, "A file of JSON lines (one job request a line)"), file,
    h("label", { for: "b-lines" }, "or the lines themselves"), lines, batchMessage,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Submit the batch")));
  batch.addEventListener("submit", async (event) => {
    event.preventDefault();
    batchMessage.textContent = "";
    const jobs = [];
    const text = lines.value.split("\n").map((line) => line.trim()).filter(Boolean);
    for (const [index, line] of text.entries()) {
      try { jobs.push(JSON.parse(line)); } catch (error) { batchMessage.textContent = `line ${index + 1}: ${error.message}`; return; }
    }
    if (!jobs.length) { batchMessage.textContent = "No job to submit."; return; }
    try {
      const answer = await api("/api/jobs/batch", { method: "POST", body: { jobs } });
      batchMessage.textContent = `${answer.successful} accepted, ${answer.failed} refused`;
    } catch (error) {
      batchMessage.textContent = error.message;
    }
  });
  page("Submit",
    can("client") ? null : h("p", { class: "error" }, "This key may not submit jobs."),
    h("section", { class: "panel", "aria-labelledby": "h-one" }, h("h2", { id: "h-one" }, "A job"), form),
    h("section", { class: "panel", "aria-labelledby": "h-batch" }, h("h2", { id: "h-batch" }, "A batch"), batch));
  return { stop() {} };
}

// ---------- routing ----------

/** Shows in the header how the current view stays up to date. */
function polling(seconds) {
  const live = document.getElementById("live");
  live.hidden = false;
  live.classList.add("on");
  live.textContent = `refreshing every ${seconds} s`;
}

function route() {
  if (view) view.stop();
  view = null;
  const live = document.getElementById("live");
  live.hidden = true;
  live.classList.remove("on");
  if (auth.keyRequired && !auth.roles.length && !auth.publicReads) {
    // Nothing can be read without a key: ask for one instead of calling the API.
    page("API key needed", h("p", {}, "This DistriQueue asks for an API key. ",
      h("button", { type: "button", onclick: () => askKey("This DistriQueue asks for an API key.") }, "Give a key")));
    askKey("This DistriQueue asks for an API key.");
    return;
  }
  const hash = location.hash || "#/overview";
  const [path] = hash.slice(1).split("?");
  const parts = path.split("/").filter(Boolean);
  const section = parts[0] || "overview";
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.view === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (section === "jobs" && parts[1]) view = jobView(decodeURIComponent(parts[1]));
  else if (section === "jobs") view = jobsView();
  else if (section === "dead-letters") view = deadLettersView();
  else if (section === "workers") view = workersView();
  else if (section === "cluster") view = clusterView();
  else if (section === "submit") view = submitView();
  else view = overviewView();
  main.focus({ preventScroll: true });
}

setUpKeyDialog();
window.addEventListener("hashchange", route);
loadAuth().then(route);
