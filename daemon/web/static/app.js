// The vcnode dashboard: plain DOM, no framework, no build step. Everything shown comes
// from /api (JSON) and /api/events (Server-Sent Events). Text from the mesh (task names,
// errors, logs) only ever goes in as text nodes, never as HTML.
"use strict";

const state = {
  me: null,
  samples: [],
  route: [],
  // The workflow shown now, kept to patch its counts the moment an event says so.
  workflow: null,
  workflows: null,
  refetch: null,
  renderMs: 0,
  // Each render's number: a slow answer never replaces a newer view.
  generation: 0,
  patches: null,
};

// --- small helpers ----------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const svg = ["svg", "polyline", "line", "rect", "text", "title"].includes(tag);
  const el = svg
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.setAttribute("class", value);
    else if (key === "width%") el.style.width = value + "%";
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

async function api(path) {
  const response = await fetch("/api/" + path, { credentials: "same-origin" });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) {
    const error = new Error(body.error || response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

const short = (id) => (id || "").slice(0, 12);
const when = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "");
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return seconds + " s";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s";
  return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
}
function ended(counts) {
  return counts.completed + counts.failed + counts.cancelled + (counts.skipped || 0);
}

// Puts a view on screen, unless a later render began meanwhile (its answer came first).
function show(generation, ...content) {
  if (generation !== state.generation) return;
  const main = document.getElementById("main");
  main.replaceChildren(...content.flat().filter((part) => part !== null && part !== undefined));
}

function problem(error) {
  if (error.status === 401) {
    return h(
      "section",
      { class: "card login", "data-testid": "login-needed" },
      h("h2", {}, "Log in"),
      h("p", {}, "Run this on a machine with your vcnode credential, then open the link it prints:"),
      h("pre", {}, "vcnode dashboard"),
      h("p", { class: "muted" }, error.message),
    );
  }
  return h("p", { class: "error" }, error.message);
}

// --- progress bars ----------------------------------------------------------------------

function progressBar(counts, testid) {
  const total = Math.max(counts.total, 1);
  const part = (name, n) => (n ? h("span", { class: "seg " + name, "width%": (100 * n) / total, title: n + " " + name }) : null);
  return h(
    "div",
    { class: "bar", "data-testid": testid },
    part("completed", counts.completed),
    part("failed", counts.failed),
    part("running", counts.running),
    part("fetching", counts.fetching || 0),
    part("cancelled", counts.cancelled + (counts.skipped || 0)),
  );
}

function countsText(counts) {
  const parts = [counts.completed + "/" + counts.total + " completed"];
  if (counts.running) parts.push(counts.running + " running");
  if (counts.fetching) parts.push(counts.fetching + " fetching");
  if (counts.queued) parts.push(counts.queued + " queued");
  if (counts.failed) parts.push(counts.failed + " failed");
  if (counts.skipped) parts.push(counts.skipped + " skipped");
  if (counts.cancelled) parts.push(counts.cancelled + " cancelled");
  return parts.join(", ");
}

// --- charts -----------------------------------------------------------------------------

// One line per series over the samples; `series` is [{label, value(sample, previous)}].
function chart(title, series, unit, testid) {
  const width = 320, height = 120, pad = 4;
  const samples = state.samples.slice(-180);
  const lines = series.map((s) =>
    samples.map((sample, i) => s.value(sample, samples[i - 1])).map((v) => (Number.isFinite(v) ? v : 0)),
  );
  const top = Math.max(1, ...lines.flat());
  const x = (i) => pad + (i * (width - 2 * pad)) / Math.max(1, samples.length - 1);
  const y = (v) => height - pad - (v * (height - 2 * pad)) / top;
  const svg = h(
    "svg",
    { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": title },
    h("line", { x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, class: "axis" }),
    ...lines.map((values, n) =>
      h("polyline", {
        class: "series s" + n,
        points: values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
      }),
    ),
  );
  const latest = lines.map((values) => values[values.length - 1]);
  return h(
    "figure",
    { class: "card", "data-testid": testid },
    h("figcaption", {}, title),
    svg,
    h(
      "div",
      { class: "legend" },
      series.map((s, n) =>
        h("span", { class: "key s" + n }, `${s.label}: ${latest[n] === undefined ? "—" : +latest[n].toFixed(2)}${unit}`),
      ),
      h("span", { class: "muted" }, ` (max ${+top.toFixed(2)}${unit}, last ${duration(samples.length > 1 ? samples[samples.length - 1].at - samples[0].at : 0)})`),
    ),
  );
}

function perMinute(key) {
  return (sample, previous) => {
    if (!previous || sample[key] === undefined) return 0;
    const minutes = (sample.at - previous.at) / 60;
    return minutes > 0 ? Math.max(0, sample[key] - previous[key]) / minutes : 0;
  };
}

// --- views ------------------------------------------------------------------------------

async function overview(gen) {
  const roles = state.me.roles;
  const cards = [];
  const last = state.samples[state.samples.length - 1] || {};
  if (roles.includes("manager")) {
    cards.push(chart("Tasks completed per minute", [{ label: "completed/min", value: perMinute("tasks_completed") }], "", "chart-completed"));
  }
  if (roles.includes("coordinator")) {
    cards.push(
      chart(
        "Pool CPU in use",
        [
          { label: "in use", value: (s) => s.pool_cpus_in_use },
          { label: "offered", value: (s) => s.pool_cpus },
        ],
        " cores",
        "chart-cpu",
      ),
    );
  }
  cards.push(
    chart(
      "Queue length",
      [{ label: "waiting", value: (s) => (s.queue_length !== undefined ? s.queue_length : s.tasks_queued) }],
      "",
      "chart-queue",
    ),
  );
  const facts = [];
  if (last.volunteers_online !== undefined) facts.push(h("div", { class: "fact" }, h("b", {}, last.volunteers_online), " volunteers online"));
  if (last.tasks_running !== undefined) facts.push(h("div", { class: "fact" }, h("b", {}, last.tasks_running), " tasks running"));
  if (last.tasks_queued !== undefined) facts.push(h("div", { class: "fact" }, h("b", {}, last.tasks_queued), " tasks queued"));
  show(gen, h("h1", {}, state.me.title), h("div", { class: "facts" }, facts), h("div", { class: "charts" }, cards));
}

function volunteerRow(v) {
  const caps = [];
  if (v.limits.max_cpus) caps.push(v.limits.max_cpus + " cpus");
  if (v.limits.max_memory_mb) caps.push(v.limits.max_memory_mb + " MB");
  if (v.limits.max_disk_mb) caps.push(v.limits.max_disk_mb + " MB disk");
  const slots = v.limits.max_concurrent_tasks;
  caps.push(slots + (slots === 1 ? " slot" : " slots"));
  const t = v.trust;
  const trust = t.blocklisted
    ? "blocklisted: " + t.blocklist_reason
    : t.vouched
      ? "vouched"
      : t.on_probation
        ? "on probation"
        : `${t.agreed} agreed, ${t.disagreed} disagreed`;
  return h(
    "tr",
    { "data-testid": "volunteer-" + v.volunteer_id, class: "state-" + v.state },
    h("td", { title: v.volunteer_id }, v.hostname, h("div", { class: "muted" }, short(v.volunteer_id))),
    h("td", {}, v.owner || "—"),
    h("td", { class: "state", "data-testid": "volunteer-state" }, v.state),
    h("td", {}, `${v.load.running_tasks} tasks · ${Math.round(v.load.cpu_percent)}% cpu · ${Math.round(v.load.memory_percent)}% mem`),
    h("td", {}, `${v.resources.cpu_cores} cores · ${v.resources.memory_mb} MB · ${v.resources.disk_free_mb} MB free`),
    h("td", {}, caps.join(", ")),
    h("td", { class: t.blocklisted ? "error" : "" }, trust),
    h("td", { class: "muted" }, when(v.last_seen)),
  );
}

async function pool(gen) {
  const found = await api("pool");
  const online = found.volunteers.filter((v) => v.state === "online").length;
  show(gen, 
    h("h1", {}, "Pool"),
    h("p", {}, `${online} of ${found.volunteers.length} volunteers online · ${found.waiting_tasks} tasks waiting`),
    h(
      "table",
      { "data-testid": "volunteers" },
      h("thead", {}, h("tr", {}, ["volunteer", "owner", "state", "load", "machine", "owner's caps", "trust", "last seen"].map((c) => h("th", {}, c)))),
      h("tbody", {}, found.volunteers.map(volunteerRow)),
    ),
  );
}

function workflowRow(w) {
  return h(
    "tr",
    { "data-testid": "workflow-" + w.workflow_id },
    h("td", {}, h("a", { href: "#/workflows/" + encodeURIComponent(w.workflow_id) }, w.name), h("div", { class: "muted" }, short(w.workflow_id))),
    h("td", {}, w.type),
    h("td", { class: "state-" + w.state }, w.state),
    h("td", { class: "wide" }, progressBar(w.counts, "bar-" + w.workflow_id), h("div", { class: "muted", "data-testid": "counts-" + w.workflow_id }, countsText(w.counts))),
    h("td", {}, w.owner),
    h("td", { class: "muted" }, when(w.created_at)),
  );
}

async function workflows(gen) {
  const found = await api("workflows");
  state.workflows = found;
  show(gen, 
    h("h1", {}, "Workflows"),
    found.length
      ? h(
          "table",
          { "data-testid": "workflows" },
          h("thead", {}, h("tr", {}, ["workflow", "type", "state", "progress", "owner", "submitted"].map((c) => h("th", {}, c)))),
          h("tbody", {}, found.map(workflowRow)),
        )
      : h("p", { class: "muted" }, "No workflows yet: `vcnode submit workflow.toml`."),
  );
}

// One row per task, from when its run began to when it ended (or now), coloured by state,
// on a time axis from the workflow's submission.
function timeline(tasks, start, now) {
  const width = 800, label = 120, row = 14, axis = 16;
  const shown = tasks.slice(0, 200);
  const end = Math.max(now, ...shown.map((t) => t.finished_at || 0));
  const span = Math.max(1, end - start);
  const x = (t) => label + ((width - label - 4) * (t - start)) / span;
  const height = shown.length * row + axis;
  return h(
    "svg",
    { viewBox: `0 0 ${width} ${height}`, class: "timeline", "data-testid": "timeline" },
    shown.map((t, i) => h("text", { x: 4, y: i * row + 11, class: "label" }, t.name.slice(0, 18))),
    shown.map((t, i) => {
      const from = t.started_at || (t.state === "running" ? t.updated_at : 0);
      if (!from) return null;
      const to = t.finished_at || now;
      return h(
        "rect",
        { x: x(from).toFixed(1), y: i * row + 1, width: Math.max(1, x(to) - x(from)).toFixed(1), height: row - 3, class: "span " + t.state },
        h("title", {}, `${t.name}: ${t.state} on ${short(t.volunteer_id)} (${duration(to - from)})`),
      );
    }),
    h("line", { x1: label, y1: height - axis + 2, x2: width - 4, y2: height - axis + 2, class: "axis" }),
    h("text", { x: label, y: height - 3, class: "label" }, "submitted"),
    h("text", { x: width - 4, y: height - 3, class: "label end" }, "+" + duration(span)),
  );
}

async function workflow(gen, id) {
  const w = await api("workflows/" + encodeURIComponent(id));
  state.workflow = w;
  const now = Date.now() / 1000;
  show(gen, 
    h("p", {}, h("a", { href: "#/workflows" }, "← workflows")),
    h("h1", {}, w.name, " ", h("span", { class: "muted" }, w.workflow_id)),
    h("p", {}, h("span", { class: "state-" + w.state, "data-testid": "workflow-state" }, w.state), ` · ${w.type} · ${w.owner} · submitted ${when(w.created_at)}`),
    progressBar(w.counts, "workflow-bar"),
    h("p", { "data-testid": "workflow-counts" }, countsText(w.counts)),
    h("p", {}, `rate ${w.rate_per_minute} tasks/min · ETA ${w.eta_seconds === null ? "—" : duration(w.eta_seconds)}`),
    w.error ? h("p", { class: "error" }, w.error) : null,
    w.failures.length
      ? h("section", { class: "card" }, h("h2", {}, "Failures"), h("ul", {}, w.failures.map((f) => h("li", {}, h("a", { href: `#/workflows/${encodeURIComponent(id)}/tasks/${encodeURIComponent(f.name)}` }, f.name), ": ", f.error))))
      : null,
    h("h2", {}, "Tasks"),
    timeline(w.tasks, w.created_at, now),
    h(
      "table",
      { "data-testid": "tasks" },
      h("thead", {}, h("tr", {}, ["task", "state", "volunteer", "attempts", "ran", "error"].map((c) => h("th", {}, c)))),
      h(
        "tbody",
        {},
        w.tasks.map((t) =>
          h(
            "tr",
            {},
            h("td", {}, h("a", { href: `#/workflows/${encodeURIComponent(id)}/tasks/${encodeURIComponent(t.name)}` }, t.name)),
            h("td", { class: "state-" + t.state }, t.state),
            h("td", { title: t.volunteer_id }, short(t.volunteer_id)),
            h("td", {}, t.attempts),
            h("td", {}, t.started_at ? duration((t.finished_at || now) - t.started_at) : ""),
            h("td", { class: "error" }, t.error),
          ),
        ),
      ),
    ),
    w.tasks_total > w.tasks.length ? h("p", { class: "muted" }, `${w.tasks.length} of ${w.tasks_total} tasks shown (those running or failed, then the latest): \`vcnode status ${id} --all\` lists every one`) : null,
  );
}

async function task(gen, id, name, stream) {
  const log = await api(`workflows/${encodeURIComponent(id)}/tasks/${encodeURIComponent(name)}/log?stream=${stream}`);
  const tab = (s) => h("a", { href: `#/workflows/${encodeURIComponent(id)}/tasks/${encodeURIComponent(name)}/${s}`, class: s === stream ? "tab on" : "tab" }, s);
  show(gen, 
    h("p", {}, h("a", { href: "#/workflows/" + encodeURIComponent(id) }, "← workflow")),
    h("h1", {}, log.name, " ", h("span", { class: "state-" + log.state }, log.state)),
    h("nav", { class: "tabs" }, tab("stdout"), tab("stderr")),
    log.note ? h("p", { class: "muted" }, log.note) : null,
    h("pre", { class: "log", "data-testid": "log" }, log.content || "(empty)"),
  );
}

// --- routing and live updates -----------------------------------------------------------

async function render() {
  const gen = ++state.generation;
  const route = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  state.route = route;
  state.workflow = null;
  state.workflows = null;
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    link.classList.toggle("on", (route[0] || "overview") === link.dataset.view);
  }
  try {
    if (!state.me) {
      state.me = await api("whoami");
      document.getElementById("who").textContent = state.me.who;
      // A manager alone has no pool to show, a coordinator alone no workflows.
      const serves = { pool: "coordinator", workflows: "manager" };
      for (const link of document.querySelectorAll("nav a[data-view]")) {
        const role = serves[link.dataset.view];
        link.hidden = Boolean(role) && !state.me.roles.includes(role);
      }
      document.getElementById("logout").hidden = false;
      connect();
      state.samples = await api("samples").catch(() => []);
    }
    const serves = { pool: "coordinator", workflows: "manager" };
    if (serves[route[0]] && !state.me.roles.includes(serves[route[0]])) {
      const elsewhere = { pool: "the pool is on its coordinator's dashboard", workflows: "workflows are on their manager's dashboard" };
      show(gen, h("p", { class: "muted" }, `This node is not a ${serves[route[0]]}: ${elsewhere[route[0]]}.`));
    } else if (route[0] === "pool") await pool(gen);
    else if (route[0] === "workflows" && route[3]) await task(gen, route[1], route[3], route[4] || "stdout");
    else if (route[0] === "workflows" && route[1]) await workflow(gen, route[1]);
    else if (route[0] === "workflows") await workflows(gen);
    else await overview(gen);
  } catch (error) {
    show(gen, problem(error));
  }
}

// Re-reads the view shortly after a burst of events (counts are patched at once), never
// more often than four times the last read took: a big workflow costs the manager more to
// read, so its page asks less often.
function refreshSoon() {
  if (state.refetch) return;
  const delay = Math.min(10000, Math.max(500, 4 * state.renderMs));
  state.refetch = setTimeout(async () => {
    const started = performance.now();
    await render();
    state.renderMs = performance.now() - started;
    state.refetch = null;
  }, delay);
}

function onWorkflowEvent(event) {
  const update = JSON.parse(event.data);
  const route = state.route;
  if (route[0] !== "workflows" || route[3]) return;
  if (route[1] && route[1] !== update.workflow_id) return;
  // The latest counts of each workflow go on screen once per frame, however many events
  // arrive; the re-read that follows fills in the rest.
  if (!state.patches) {
    state.patches = new Map();
    requestAnimationFrame(patchCounts);
  }
  state.patches.set(update.workflow_id, update.counts);
  refreshSoon();
}

function patchCounts() {
  const detail = Boolean(state.route[1]);
  for (const [id, counts] of state.patches) {
    const text = document.querySelector(detail ? '[data-testid="workflow-counts"]' : `[data-testid="counts-${CSS.escape(id)}"]`);
    if (text) text.textContent = countsText(counts);
    const bar = document.querySelector(detail ? '[data-testid="workflow-bar"]' : `[data-testid="bar-${CSS.escape(id)}"]`);
    if (bar) bar.replaceWith(progressBar(counts, bar.dataset.testid));
  }
  state.patches = null;
}

function onSample(event) {
  state.samples.push(JSON.parse(event.data));
  if (state.samples.length > 1800) state.samples.shift();
  const view = state.route[0] || "overview";
  if (view === "overview" || view === "pool") render();
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => {
    live.textContent = "live";
    live.className = "live on";
  });
  source.addEventListener("error", () => {
    live.textContent = "reconnecting";
    live.className = "live off";
  });
  source.addEventListener("workflow", onWorkflowEvent);
  source.addEventListener("sample", onSample);
  // The node refused this session (it ended, or its person was revoked): stop asking.
  source.addEventListener("refused", (event) => {
    source.close();
    live.textContent = "logged out";
    const error = new Error(JSON.parse(event.data).error);
    error.status = 401;
    state.me = null;
    show(state.generation, problem(error));
  });
}

async function logOut() {
  await fetch("/logout", { method: "POST", credentials: "same-origin" });
  location.hash = "";
  location.reload();
}

window.addEventListener("hashchange", render);
document.getElementById("logout").addEventListener("click", logOut);
render();
