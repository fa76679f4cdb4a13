// The loa dashboard: plain JavaScript, no framework, nothing fetched but this server's API.
// Every value from the API reaches the page through textContent, never as HTML.
(() => {
  "use strict";

  const TOKEN_KEY = "loa.token";
  const ROLES = { viewer: 1, operator: 2, approver: 3, admin: 4 };
  const ENDED = new Set(["done", "cancelled", "expired"]);
  const POLL_MS = 1000; // the status endpoint, once a second while a campaign is open
  const ENDED_POLL_MS = 5000;
  const LIST_MS = 5000;
  const RATE_WINDOW_S = 5; // rates are the change over about this many seconds
  const HISTORY = 600; // samples kept for the chart: ten minutes at one a second
  const CHART_SMOOTH_S = 3;

  const $ = (id) => document.getElementById(id);
  const numbers = new Intl.NumberFormat();
  const decimals = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

  const view = {
    me: null, // {name, role}
    mayAct: false, // operator or higher: may pause, resume and cancel
    campaign: "", // the open campaign's id
    generation: 0, // bumped on every switch: late answers for the old campaign are dropped
    samples: [], // {t, sent, delivered, finished, routes: {route: sent}}
    routes: new Map(), // route name -> row of GET /routes
    pollTimer: 0,
    listTimer: 0,
    appointmentsTimer: 0,
    inboxTimer: 0,
  };

  class ApiFailure extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // --- the API ------------------------------------------------------------------------------

  async function api(path, method = "GET") {
    const response = await fetch(`api/v1/${path}`, {
      method,
      cache: "no-store",
      headers: {
        Accept: "application/json",
        Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}`,
      },
    });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const error = (body && body.error) || {};
      throw new ApiFailure(
        response.status,
        String(error.code || "http_error"),
        String(error.message || `HTTP ${response.status}`),
      );
    }
    return body;
  }

  const campaignPath = (id, action = "") =>
    `campaigns/${encodeURIComponent(id)}${action ? `/${action}` : ""}`;

  function refused(error) {
    // a token that was revoked while the page was open: back to the sign-in form
    if (error instanceof ApiFailure && error.status === 401) {
      signOut(error.message);
      return true;
    }
    return false;
  }

  // --- small DOM helpers: text only ---------------------------------------------------------

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  const count = (value) => (Number.isFinite(value) ? numbers.format(value) : "–");
  const rate = (value) => (value === null ? "–" : decimals.format(value));

  function setText(id, text) {
    const node = $(id);
    if (node.textContent !== text) node.textContent = text;
  }

  function banner(text) {
    const node = $("banner");
    node.textContent = text || "";
    node.hidden = !text;
  }

  function duration(seconds) {
    if (!Number.isFinite(seconds)) return "–";
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (h) return `${h} h ${m} min`;
    if (m) return `${m} min ${s % 60} s`;
    return `${s} s`;
  }

  // --- signing in and out --------------------------------------------------------------------

  async function signIn(event) {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    await start();
  }

  function signOut(reason) {
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(view.pollTimer);
    clearTimeout(view.listTimer);
    clearTimeout(view.appointmentsTimer);
    clearTimeout(view.inboxTimer);
    view.me = null;
    view.mayAct = false;
    view.campaign = "";
    view.generation += 1;
    $("app").hidden = true;
    $("logout").hidden = true;
    setText("who", "");
    banner("");
    $("login").hidden = false;
    setText("login-error", reason || "");
    $("token").focus();
  }

  async function start() {
    if (!sessionStorage.getItem(TOKEN_KEY)) {
      signOut("");
      return;
    }
    try {
      view.me = await api("whoami");
    } catch (error) {
      signOut(error instanceof ApiFailure ? error.message : "the server cannot be reached");
      return;
    }
    $("login").hidden = true;
    $("app").hidden = false;
    $("logout").hidden = false;
    setText("who", `${view.me.name} (${view.me.role})`);
    // viewers observe: the buttons are not shown (and the API would refuse them anyway)
    view.mayAct = (ROLES[view.me.role] || 0) >= ROLES.operator;
    $("actions").hidden = !view.mayAct;
    await refreshList();
    openFromHash();
    await refreshAppointments();
    await refreshInbox();
  }

  // --- the campaign list ---------------------------------------------------------------------

  async function refreshList() {
    clearTimeout(view.listTimer);
    try {
      renderList(await api("campaigns?limit=100"));
      setText("list-updated", `updated ${new Date().toLocaleTimeString()}`);
    } catch (error) {
      if (refused(error)) return;
      banner(`Campaign list: ${error.message}`);
    }
    view.listTimer = setTimeout(refreshList, LIST_MS);
  }

  function renderList(rows) {
    const body = $("campaign-table").tBodies[0];
    const lines = rows.map((row) => {
      const tr = document.createElement("tr");
      if (row.id === view.campaign) tr.className = "selected";
      const state = document.createElement("td");
      const badge = document.createElement("span");
      badge.className = `state ${stateClass(row.state)}`;
      badge.textContent = row.state;
      const held = document.createElement("span");
      held.className = "muted";
      held.textContent = holdText(row) ? ` ${holdText(row)}` : "";
      state.append(badge, held);
      const name = document.createElement("td");
      const open = document.createElement("button");
      open.type = "button";
      open.className = "link";
      open.dataset.id = row.id;
      open.textContent = row.name || row.id;
      open.addEventListener("click", () => {
        location.hash = `#campaign=${encodeURIComponent(row.id)}`;
      });
      name.append(open);
      tr.append(state, name, cell(row.id, "mono muted"), cell(count(row.queued), "num"));
      return tr;
    });
    body.replaceChildren(...lines);
    $("campaign-empty").hidden = rows.length > 0;
  }

  function stateClass(state) {
    return /^[a-z]+$/.test(state) ? `state-${state}` : "";
  }

  // why a campaign sends nothing now (quiet hours, paused, scheduled) and until when
  function holdText(item) {
    if (!item.hold) return "";
    const until = item.held_until ? `until ${new Date(item.held_until).toLocaleString()}` : "";
    if (item.hold === item.state) return until;
    return until ? `${item.hold} ${until}` : item.hold;
  }

  // --- the hotline inbox ---------------------------------------------------------------------

  async function refreshInbox() {
    clearTimeout(view.inboxTimer);
    try {
      renderInbox(await api("inbox?limit=100")); // open first, urgent on top, as the API sorts
      setText("inbox-updated", `updated ${new Date().toLocaleTimeString()}`);
    } catch (error) {
      if (refused(error)) return;
      banner(`Hotline: ${error.message}`);
    }
    view.inboxTimer = setTimeout(refreshInbox, LIST_MS);
  }

  function renderInbox(cases) {
    const rows = cases.map((item) => {
      const tr = document.createElement("tr");
      if (item.urgent) tr.className = "urgent";
      tr.append(
        cell(item.id, "mono"),
        cell(item.state, `state ${stateClass(item.state)}`),
        cell(item.urgent ? "urgent" : ""),
        cell(item.phone, "mono"),
        cell(item.assignee),
        cell(count(item.messages), "num"),
        cell(item.last),
      );
      return tr;
    });
    $("inbox-table").tBodies[0].replaceChildren(...rows);
    $("inbox").hidden = cases.length === 0;
  }

  // --- appointment drives --------------------------------------------------------------------

  const FULLEST_SITES = 20; // per drive: the sites with the fewest free places

  async function refreshAppointments() {
    clearTimeout(view.appointmentsTimer);
    try {
      const drives = await api("appointments");
      const summaries = await Promise.all(
        drives.map((drive) => api(`appointments/${encodeURIComponent(drive)}?sessions=false`)),
      );
      renderAppointments(summaries);
      setText("appointments-updated", `updated ${new Date().toLocaleTimeString()}`);
    } catch (error) {
      if (refused(error)) return;
      banner(`Appointments: ${error.message}`);
    }
    view.appointmentsTimer = setTimeout(refreshAppointments, LIST_MS);
  }

  function renderAppointments(summaries) {
    const groups = [];
    const sites = [];
    for (const summary of summaries) {
      for (const [group, counts] of Object.entries(summary.by_group)) {
        const tr = document.createElement("tr");
        tr.append(cell(summary.drive), cell(group, "num"));
        for (const key of ["placed", "confirmed", "waiting", "cancelled"]) {
          tr.append(cell(count(counts[key]), "num"));
        }
        groups.push(tr);
      }
      const fullest = Object.entries(summary.by_site)
        .sort((a, b) => a[1].free - b[1].free || a[0].localeCompare(b[0]))
        .slice(0, FULLEST_SITES);
      for (const [site, places] of fullest) {
        const tr = document.createElement("tr");
        tr.append(cell(summary.drive), cell(site, "mono"));
        for (const key of ["capacity", "booked", "free"]) {
          tr.append(cell(count(places[key]), "num"));
        }
        sites.push(tr);
      }
    }
    $("appointment-groups").tBodies[0].replaceChildren(...groups);
    $("appointment-sites").tBodies[0].replaceChildren(...sites);
    $("appointments").hidden = summaries.length === 0;
  }

  // --- one campaign, live ---------------------------------------------------------------------

  function openFromHash() {
    const match = /^#campaign=([A-Za-z0-9._%-]+)$/.exec(location.hash);
    let id = "";
    try {
      id = match ? decodeURIComponent(match[1]) : "";
    } catch {
      id = ""; // a hand-edited address that is not valid percent-encoding
    }
    if (id === view.campaign) return;
    view.campaign = id;
    view.generation += 1;
    view.samples = [];
    clearTimeout(view.pollTimer);
    $("detail").hidden = !id;
    setText("action-msg", "");
    for (const row of $("campaign-table").tBodies[0].rows) {
      const button = row.querySelector("button[data-id]");
      row.className = button && button.dataset.id === id ? "selected" : "";
    }
    if (id) poll(view.generation);
  }

  async function poll(generation) {
    let next = POLL_MS;
    try {
      const [status, routes] = await Promise.all([
        api(campaignPath(view.campaign)),
        api("routes"),
      ]);
      if (generation !== view.generation) return; // another campaign was opened meanwhile
      view.routes = new Map(routes.map((row) => [row.route, row]));
      record(status);
      render(status);
      banner("");
      if (ENDED.has(status.state)) next = ENDED_POLL_MS;
    } catch (error) {
      if (generation !== view.generation || refused(error)) return;
      banner(`Lost contact with the server (${error.message}); trying again.`);
    }
    view.pollTimer = setTimeout(() => poll(generation), next);
  }

  function record(status) {
    const routes = {};
    for (const [name, counts] of Object.entries(status.by_route || {})) {
      routes[name] = counts.accepted || 0;
    }
    view.samples.push({
      t: performance.now() / 1000,
      sent: status.sent,
      delivered: status.delivered,
      finished: status.finished,
      routes,
    });
    if (view.samples.length > HISTORY) view.samples.shift();
  }

  // per second, over the last RATE_WINDOW_S seconds of samples (null until two samples exist)
  function perSecond(pick) {
    const samples = view.samples;
    if (samples.length < 2) return null;
    const last = samples[samples.length - 1];
    let first = samples[0];
    for (let i = samples.length - 2; i >= 0; i -= 1) {
      first = samples[i];
      if (last.t - first.t >= RATE_WINDOW_S) break;
    }
    const seconds = last.t - first.t;
    return seconds > 0 ? Math.max(0, (pick(last) - pick(first)) / seconds) : null;
  }

  function render(status) {
    setText("d-name", status.name);
    setText("d-id", status.id);
    const state = $("d-state");
    state.textContent = status.state;
    state.className = `state ${stateClass(status.state)}`;
    setText("d-hold", holdText(status));
    const failed = status.failed;
    const values = {
      "v-total": status.total,
      "v-queued": status.queued,
      "v-sent": status.sent,
      "v-delivered": status.delivered,
      "v-undelivered": status.undelivered,
      "v-failed": failed,
      "v-expired": status.expired,
      "v-suppressed": status.suppressed,
      "v-fallback": status.fallback,
      // why messages went on to their next channel: no delivered receipt in time, or failure
      "v-fallback-timeout": status.fallback_timeout,
      "v-fallback-failed": status.fallback_failed,
      "v-cancelled": status.cancelled,
    };
    for (const [id, value] of Object.entries(values)) setText(id, count(value));
    const sentRate = perSecond((s) => s.sent);
    setText("v-rate", rate(sentRate));
    setText("v-drate", rate(perSecond((s) => s.delivered)));
    const remaining = Math.max(0, (status.queued || 0) - (status.finished || 0));
    setText("v-remaining", count(remaining));
    setText("v-eta", eta(status.state, remaining, perSecond((s) => s.finished)));
    setText("v-queue", count(queueDepth(Object.keys(status.by_route || {}))));
    renderRoutes(status.by_route || {});
    renderActions(status.state);
    drawChart();
    setText("d-updated", `updated ${new Date().toLocaleTimeString()}`);
  }

  function eta(state, remaining, finishing) {
    if (ENDED.has(state)) return state;
    if (remaining === 0) return "–";
    if (state !== "running") return `${state}`;
    if (!finishing) return "…";
    return duration(remaining / finishing);
  }

  function queueDepth(names) {
    let depth = 0;
    for (const name of names) {
      const row = view.routes.get(name);
      if (row) depth += row.waiting + row.in_flight;
    }
    return depth;
  }

  function renderRoutes(byRoute) {
    const lines = Object.keys(byRoute)
      .sort()
      .map((name) => {
        const counts = byRoute[name];
        const row = view.routes.get(name);
        const tr = document.createElement("tr");
        const n = (key) => count(counts[key] || 0);
        const failed = (counts.failed || 0) + (counts.dead || 0);
        const routeRate = perSecond((s) => s.routes[name] || 0);
        tr.append(
          cell(name, "mono"),
          cell(row ? row.channels.join(", ") || "–" : "–"),
          cell(n("accepted"), "num"),
          cell(n("delivered"), "num"),
          cell(n("undelivered"), "num"),
          cell(count(failed), "num"),
          cell(n("expired"), "num"),
          cell(n("suppressed"), "num"),
          cell(n("fallback"), "num"),
          cell(n("fallback_timeout"), "num"),
          cell(rate(routeRate), "num"),
          cell(row ? count(row.waiting + row.in_flight) : "–", "num"),
        );
        return tr;
      });
    $("route-table").tBodies[0].replaceChildren(...lines);
  }

  // --- pause, resume, cancel ---------------------------------------------------------------------

  function renderActions(state) {
    const may = view.mayAct;
    $("pause").hidden = !(may && (state === "running" || state === "scheduled"));
    $("resume").hidden = !(may && state === "paused");
    $("cancel").hidden = !may || ENDED.has(state) || state === "draft";
  }

  async function act(action) {
    const id = view.campaign;
    if (!id) return;
    const question = `Cancel campaign ${id} for good? What was not sent yet is dropped.`;
    if (action === "cancel" && !confirm(question)) return;
    const buttons = ["pause", "resume", "cancel"].map($);
    for (const button of buttons) button.disabled = true;
    setText("action-msg", `${action}…`);
    try {
      const change = await api(campaignPath(id, action), "POST");
      setText("action-msg", `${action}: now ${change.state}`);
      if (id === view.campaign) {
        const state = $("d-state");
        state.textContent = change.state;
        state.className = `state ${stateClass(change.state)}`;
        renderActions(change.state);
      }
      refreshList();
    } catch (error) {
      if (!refused(error)) setText("action-msg", `${action} refused: ${error.message}`);
    } finally {
      for (const button of buttons) button.disabled = false;
    }
  }

  // --- the chart: sent and delivered per second, drawn by hand on a canvas ----------------------

  // counters move as whole batches settle: each point is the rate over the seconds before it
  function series(pick) {
    const points = [];
    const samples = view.samples;
    let j = 0;
    for (let i = 1; i < samples.length; i += 1) {
      while (j < i - 1 && samples[i].t - samples[j + 1].t >= CHART_SMOOTH_S) j += 1;
      const dt = samples[i].t - samples[j].t;
      const change = pick(samples[i]) - pick(samples[j]);
      if (dt > 0) points.push({ t: samples[i].t, v: Math.max(0, change / dt) });
    }
    return points;
  }

  function drawChart() {
    const canvas = $("chart");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 900;
    const height = canvas.clientHeight || 220;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const sent = series((s) => s.sent);
    const delivered = series((s) => s.delivered);
    const pad = { left: 48, right: 12, top: 12, bottom: 22 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const top = niceCeiling(Math.max(1, ...sent.map((p) => p.v), ...delivered.map((p) => p.v)));
    const end = view.samples.length ? view.samples[view.samples.length - 1].t : 0;
    const start = view.samples.length ? view.samples[0].t : 0;
    const span = Math.max(10, end - start);
    const x = (t) => pad.left + plotW * (1 - (end - t) / span);
    const y = (v) => pad.top + plotH * (1 - v / top);

    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#6b7280";
    g.strokeStyle = "#e5e7eb";
    g.lineWidth = 1;
    for (let i = 0; i <= 4; i += 1) {
      const v = (top * i) / 4;
      const yy = Math.round(y(v)) + 0.5;
      g.beginPath();
      g.moveTo(pad.left, yy);
      g.lineTo(width - pad.right, yy);
      g.stroke();
      g.textAlign = "right";
      g.textBaseline = "middle";
      g.fillText(decimals.format(v), pad.left - 6, yy);
    }
    g.textAlign = "left";
    g.textBaseline = "top";
    g.fillText(`${Math.round(span)} s ago`, pad.left, height - pad.bottom + 6);
    g.textAlign = "right";
    g.fillText("now", width - pad.right, height - pad.bottom + 6);
    line(g, delivered, x, y, "#16a34a");
    line(g, sent, x, y, "#2563eb");
    setText("chart-span", sent.length ? `· last ${Math.round(span)} s` : "· waiting for data");
  }

  function line(g, points, x, y, colour) {
    if (points.length < 1) return;
    g.strokeStyle = colour;
    g.lineWidth = 2;
    g.lineJoin = "round";
    g.beginPath();
    points.forEach((p, i) => (i ? g.lineTo(x(p.t), y(p.v)) : g.moveTo(x(p.t), y(p.v))));
    g.stroke();
  }

  function niceCeiling(value) {
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (step * power >= value) return step * power;
    }
    return 10 * power;
  }

  // --- wiring ----------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", signIn);
    $("logout").addEventListener("click", () => signOut(""));
    $("pause").addEventListener("click", () => act("pause"));
    $("resume").addEventListener("click", () => act("resume"));
    $("cancel").addEventListener("click", () => act("cancel"));
    window.addEventListener("hashchange", openFromHash);
    window.addEventListener("resize", drawChart);
    start();
  });
})();
