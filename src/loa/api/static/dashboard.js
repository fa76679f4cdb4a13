// The loa dashboard: plain JavaScript, no framework, nothing fetched but this server's API.
// Every value from the API reaches the page through textContent, never as HTML.
(() => {
  "use strict";

  const TOKEN_KEY = "loa.token";
  const ROLES = { viewer: 1, operator: 2, approver: 3, admin: 4 };
  const ENDED = new Set(["done", "cancelled", "expired"]);
  const POLL_MS = 1000; // the status endpoint, once a second while a campaign is open
  const ENDED_POLL_MS = 5000;
  const LIST_MS = 2000; // the list of campaigns, with their states: one request for all of them
  const INBOX_MS = 5000;
  const EXTRA_MS = 3000; // the open campaign's provinces and answers
  const RATE_WINDOW_S = 5; // rates are the change over about this many seconds
  const HISTORY = 600; // samples kept for the chart: ten minutes at one a second
  const CHART_SMOOTH_S = 3;

  const $ = (id) => document.getElementById(id);
  const numbers = new Intl.NumberFormat();
  const decimals = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

  const view = {
    me: null, // {name, role}
    mayAct: false, // operator or higher: may create, launch, pause, resume and cancel
    mayApprove: false, // approver or higher (the API still refuses the campaign's creator)
    status: null, // the open campaign's last status
    extraAt: 0, // when its provinces and answers were last asked for (ms)
    caseId: "", // the open hotline case
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

  // `body`: FormData (an upload) or a plain object (sent as JSON)
  async function api(path, method = "GET", body = undefined) {
    const headers = {
      Accept: "application/json",
      Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}`,
    };
    let payload = body;
    if (body !== undefined && !(body instanceof FormData)) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const response = await fetch(`api/v1/${path}`, {
      method,
      cache: "no-store",
      headers,
      body: payload,
    });
    const answer = await response.json().catch(() => null);
    if (!response.ok) {
      const error = (answer && answer.error) || {};
      throw new ApiFailure(
        response.status,
        String(error.code || "http_error"),
        String(error.message || `HTTP ${response.status}`),
      );
    }
    return answer;
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

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function row(values, classes = []) {
    const tr = document.createElement("tr");
    values.forEach((value, i) => tr.append(cell(value, classes[i])));
    return tr;
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
    view.mayApprove = false;
    view.caseId = "";
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
    view.mayApprove = (ROLES[view.me.role] || 0) >= ROLES.approver;
    $("actions").hidden = !view.mayAct;
    $("create").hidden = !view.mayAct;
    $("inbox-sync").hidden = !view.mayAct;
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
    view.inboxTimer = setTimeout(refreshInbox, INBOX_MS);
  }

  function renderInbox(cases) {
    const rows = cases.map((item) => {
      const tr = document.createElement("tr");
      const classes = [];
      if (item.urgent) classes.push("urgent");
      if (item.id === view.caseId) classes.push("selected");
      tr.className = classes.join(" ");
      const open = element("button", item.id, "link mono");
      open.type = "button";
      open.dataset.case = item.id;
      open.addEventListener("click", () => openCase(item.id));
      const id = document.createElement("td");
      id.append(open);
      tr.append(
        id,
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
    $("inbox-empty").hidden = cases.length > 0;
  }

  async function syncInbox() {
    const button = $("inbox-sync");
    button.disabled = true;
    try {
      const taken = await api("inbox/sync", "POST");
      setText("inbox-updated", `${count(taken.messages)} new messages`);
      await refreshInbox();
    } catch (error) {
      if (!refused(error)) banner(`Hotline: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  }

  async function openCase(id) {
    view.caseId = id;
    setText("case-msg", "");
    $("reply-text").value = "";
    await showCase();
    for (const tr of $("inbox-table").tBodies[0].rows) {
      const button = tr.querySelector("button[data-case]");
      tr.classList.toggle("selected", Boolean(button && button.dataset.case === id));
    }
  }

  async function showCase() {
    const id = view.caseId;
    if (!id) return;
    try {
      const conversation = await api(`inbox/${encodeURIComponent(id)}`);
      if (id !== view.caseId) return;
      renderCase(conversation);
    } catch (error) {
      if (!refused(error)) setText("case-msg", error.message);
    }
  }

  function renderCase(conversation) {
    const item = conversation.case;
    $("case").hidden = false;
    setText("case-id", item.id);
    const state = $("case-state");
    state.textContent = item.state;
    state.className = `state ${stateClass(item.state)}`;
    $("case-urgent").hidden = !item.urgent;
    setText("case-phone", item.phone);
    setText("case-assignee", item.assignee ? `assigned to ${item.assignee}` : "not assigned");
    const lines = conversation.messages.map((message) => {
      const li = element("li", undefined, `message ${message.dir === "out" ? "out" : "in"}`);
      const who = message.dir === "out" ? `${message.by || "operator"} answered` : "citizen";
      const head = element("span", `${new Date(message.at).toLocaleString()} · ${who}`, "muted");
      li.append(head, element("p", message.text));
      return li;
    });
    $("case-messages").replaceChildren(...lines);
    // viewers read; operators answer, assign and close (the API refuses anyone else)
    $("case-form").hidden = !view.mayAct || item.state === "closed";
  }

  async function caseAction(action, body) {
    const id = view.caseId;
    if (!id) return;
    const buttons = ["reply-send", "case-assign", "case-close"].map($);
    for (const button of buttons) button.disabled = true;
    try {
      const done = await api(`inbox/${encodeURIComponent(id)}/${action}`, "POST", body);
      if (action === "reply") {
        $("reply-text").value = "";
        setText("case-msg", `answer queued on ${done.route} (${done.parts} SMS parts)`);
      } else {
        setText("case-msg", `${action}: now ${done.state}`);
      }
      await showCase();
      await refreshInbox();
    } catch (error) {
      if (!refused(error)) setText("case-msg", `${action} refused: ${error.message}`);
    } finally {
      for (const button of buttons) button.disabled = false;
    }
  }

  // --- a new campaign: plan text and audience file, checked, then created as a draft ---------

  function upload() {
    const plan = $("new-plan").value;
    const file = $("new-audience").files[0];
    if (!plan.trim() || !file) return null;
    const form = new FormData();
    form.append("plan", new Blob([plan], { type: "application/toml" }), "plan.toml");
    form.append("audience", file, file.name);
    return form;
  }

  async function createCampaign(dryRunOnly) {
    const form = upload();
    if (!form) {
      setText("create-msg", "Write the plan and choose the audience file first.");
      return;
    }
    const buttons = ["new-check", "new-create"].map($);
    for (const button of buttons) button.disabled = true;
    setText("create-msg", dryRunOnly ? "checking…" : "creating…");
    try {
      if (dryRunOnly) {
        renderDry($("create-dry"), await api("campaigns/validate", "POST", form));
        setText("create-msg", "dry run: nothing was stored or queued");
        return;
      }
      const made = await api("campaigns", "POST", form);
      const approval = made.approval.required
        ? `needs approval by a second person (${made.approval.reason})`
        : "no second approval needed";
      setText("create-msg", `created draft ${made.id}: ${approval}`);
      $("create-dry").hidden = true;
      $("create-form").reset();
      await refreshList();
      location.hash = `#campaign=${encodeURIComponent(made.id)}`;
    } catch (error) {
      if (!refused(error)) setText("create-msg", `refused: ${error.message}`);
    } finally {
      for (const button of buttons) button.disabled = false;
    }
  }

  const DRY_COUNTS = [
    "total", "queued", "invalid", "duplicate", "suppressed", "filtered", "capped",
    "unroutable", "scheduled", "after_expiry", "parts",
  ];

  // the dry run as the approver reads it: counts, problems, warnings, bad rows, sample messages
  function renderDry(container, report) {
    const parts = [element("h3", "Dry run")];
    const tiles = element("dl", undefined, "tiles");
    for (const name of DRY_COUNTS) {
      const tile = document.createElement("div");
      const value = element("dd", count(report[name]));
      value.dataset.count = name;
      tile.append(element("dt", name.replace("_", " ")), value);
      tiles.append(tile);
    }
    parts.push(tiles);
    const lists = [
      ["problems", report.problems, "problem"],
      ["warnings", report.warnings, "warning"],
    ];
    for (const [title, items, kind] of lists) {
      if (!items || !items.length) continue;
      const list = element("ul", undefined, `notes ${kind}`);
      for (const item of items) list.append(element("li", item));
      parts.push(element("h4", title), list);
    }
    if (report.errors && report.errors.length) {
      const table = element("table", undefined, "grid errors");
      table.append(headRow(["line", "why"]));
      const body = document.createElement("tbody");
      for (const error of report.errors) body.append(row([String(error.line), error.reason]));
      table.append(body);
      parts.push(element("h4", "first bad rows"), table);
    }
    // the first message of each channel and language, numbers masked by the API
    const table = element("table", undefined, "grid samples");
    table.append(headRow(["channel / language", "to", "message"]));
    const body = document.createElement("tbody");
    for (const [key, sample] of Object.entries(report.samples || {})) {
      body.append(row([key, sample.to, sample.body], ["mono", "mono", "sample-text"]));
    }
    table.append(body);
    parts.push(element("h4", "sample messages"), table);
    container.replaceChildren(...parts);
    container.hidden = false;
  }

  function headRow(names) {
    const head = document.createElement("thead");
    const tr = document.createElement("tr");
    for (const name of names) tr.append(element("th", name));
    head.append(tr);
    return head;
  }

  // --- the open campaign's provinces and answers -----------------------------------------------

  const PROVINCE_KEYS = ["queued", "sent", "delivered", "answers"];

  async function refreshExtra(generation) {
    view.extraAt = performance.now();
    const id = view.campaign;
    try {
      const [provinces, answers] = await Promise.all([
        api(campaignPath(id, "provinces")),
        api(campaignPath(id, "answers")),
      ]);
      if (generation !== view.generation) return;
      renderProvinces(provinces.provinces);
      $("province-note").hidden = provinces.counted;
      renderAnswers(answers);
    } catch (error) {
      if (generation !== view.generation || refused(error)) return;
      banner(`Provinces and answers: ${error.message}`);
    }
  }

  // bars sorted by province code: each row's bars are scaled to the largest queued count
  function renderProvinces(rows) {
    const top = Math.max(1, ...rows.map((r) => Math.max(...PROVINCE_KEYS.map((k) => r[k]))));
    const lines = rows.map((item) => {
      const tr = document.createElement("tr");
      tr.dataset.province = item.code;
      const label = item.province
        ? `${item.code} ${item.name}`
        : item.code === "?" ? "no region" : `${item.code} (not a province)`;
      tr.append(cell(label));
      for (const key of PROVINCE_KEYS) {
        const value = cell(count(item[key]), "num");
        value.dataset.count = key;
        tr.append(value);
      }
      const bars = element("td", undefined, "bars");
      for (const key of PROVINCE_KEYS) {
        if (item[key] === null) continue; // not counted per province for this campaign
        const bar = element("span", undefined, `pbar ${key}`);
        bar.style.width = `${(100 * item[key]) / top}%`; // CSSOM, not markup: the CSP allows it
        bar.title = `${key}: ${count(item[key])}`;
        bars.append(bar);
      }
      tr.append(bars);
      return tr;
    });
    $("province-table").tBodies[0].replaceChildren(...lines);
    $("province-empty").hidden = rows.length > 0;
  }

  function renderAnswers(summary) {
    $("answers").hidden = !summary.question;
    if (!summary.question) return;
    setText("a-question", summary.question);
    setText("a-sent", count(summary.sent));
    setText("a-answered", count(summary.answered));
    setText("a-rate", `${decimals.format(100 * summary.response_rate)} %`);
    setText("a-unparsed", count(summary.unparsed_count));
    const options = summary.options.map((option) => {
      const tr = row([option.code, option.label, count(option.count)], ["mono", "", "num"]);
      tr.dataset.option = option.code;
      if (option.urgent) tr.className = "urgent";
      return tr;
    });
    $("answer-options").tBodies[0].replaceChildren(...options);
    const codes = summary.options.map((option) => option.code);
    const regions = $("answer-regions");
    regions.tHead.rows[0].replaceChildren(
      element("th", "region"),
      ...codes.map((code) => element("th", code, "num")),
    );
    const lines = Object.entries(summary.by_region).map(([region, counts]) => {
      const values = [region, ...codes.map((c) => count(counts[c] || 0))];
      const tr = row(values, ["mono", ...codes.map(() => "num")]);
      tr.dataset.region = region;
      return tr;
    });
    regions.tBodies[0].replaceChildren(...lines);
    const unparsed = summary.unparsed.map((reply) =>
      row([new Date(reply.at).toLocaleString(), reply.phone, reply.region, reply.text], ["", "mono"]),
    );
    $("answer-unparsed").tBodies[0].replaceChildren(...unparsed);
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
    view.status = null;
    view.extraAt = 0;
    $("action-refused").hidden = true;
    $("detail-dry").hidden = true;
    $("answers").hidden = true;
    $("province-table").tBodies[0].replaceChildren();
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
      if (performance.now() - view.extraAt >= EXTRA_MS) refreshExtra(generation);
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
    view.status = status;
    setText("d-name", status.name);
    setText("d-approval", approvalText(status.approval));
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
    renderActions(status.state, status.approval);
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

  // --- dry run, approve, launch, pause, resume, cancel -------------------------------------------

  function approvalText(approval) {
    if (!approval) return "";
    const by = approval.creator ? `created by ${approval.creator}` : "";
    if (approval.approved_by) return `${by}; approved by ${approval.approved_by}`;
    if (!approval.required) return `${by}; no second approval needed (${approval.reason})`;
    return `${by}; needs approval by a second person (${approval.reason})`;
  }

  function renderActions(state, approval) {
    const may = view.mayAct;
    const approved = Boolean(approval && approval.approved_by);
    const required = Boolean(approval && approval.required);
    const draft = state === "draft";
    $("validate").hidden = !(may && (draft || state === "approved"));
    $("approve").hidden = !(view.mayApprove && draft && required && !approved);
    $("launch").hidden = !(may && (state === "approved" || (draft && !required)));
    $("pause").hidden = !(may && (state === "running" || state === "scheduled"));
    $("resume").hidden = !(may && state === "paused");
    $("cancel").hidden = !may || ENDED.has(state) || state === "draft";
  }

  async function act(action) {
    const id = view.campaign;
    if (!id) return;
    const question = `Cancel campaign ${id} for good? What was not sent yet is dropped.`;
    if (action === "cancel" && !confirm(question)) return;
    const launchQuestion = `Launch campaign ${id} now? Its messages are queued at once.`;
    if (action === "launch" && !confirm(launchQuestion)) return;
    const buttons = ["validate", "approve", "launch", "pause", "resume", "cancel"].map($);
    for (const button of buttons) button.disabled = true;
    setText("action-msg", `${action}…`);
    $("action-refused").hidden = true;
    try {
      const change = await api(campaignPath(id, action), "POST");
      if (action === "validate") {
        if (id === view.campaign) renderDry($("detail-dry"), change);
        setText("action-msg", "dry run of the pinned plan and audience: nothing queued");
        return;
      }
      const planning = action === "launch" && change.planning === "running";
      setText("action-msg", `${action}: now ${change.state}${planning ? " (planning…)" : ""}`);
      if (id === view.campaign) {
        const state = $("d-state");
        state.textContent = change.state;
        state.className = `state ${stateClass(change.state)}`;
        renderActions(change.state, view.status && view.status.approval);
      }
      refreshList();
    } catch (error) {
      if (!refused(error)) {
        setText("action-msg", "");
        const refusal = $("action-refused"); // a refusal stays in sight until the next action
        refusal.textContent = `${capital(action)} refused: ${error.message}`;
        refusal.hidden = false;
      }
    } finally {
      for (const button of buttons) button.disabled = false;
    }
  }

  const capital = (word) => word.charAt(0).toUpperCase() + word.slice(1);

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
    $("create-form").addEventListener("submit", (event) => {
      event.preventDefault();
      createCampaign(false);
    });
    $("new-check").addEventListener("click", () => createCampaign(true));
    $("validate").addEventListener("click", () => act("validate"));
    $("approve").addEventListener("click", () => act("approve"));
    $("launch").addEventListener("click", () => act("launch"));
    $("inbox-sync").addEventListener("click", syncInbox);
    $("case-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const text = $("reply-text").value;
      if (text.trim()) caseAction("reply", { text });
    });
    $("case-assign").addEventListener("click", () => caseAction("assign", {}));
    $("case-close").addEventListener("click", () => caseAction("close"));
    $("pause").addEventListener("click", () => act("pause"));
    $("resume").addEventListener("click", () => act("resume"));
    $("cancel").addEventListener("click", () => act("cancel"));
    window.addEventListener("hashchange", openFromHash);
    window.addEventListener("resize", drawChart);
    start();
  });
})();
