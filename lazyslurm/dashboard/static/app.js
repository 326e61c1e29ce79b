"use strict";
// The lazyslurm dashboard page: plain JS, no library. One EventSource per page brings the
// runs list, the open run's structure and states, and the open element's logs.
(function () {
  const params = new URLSearchParams(location.search);
  const TOKEN = params.get("token") || "";
  const HEADER = "X-Lazyslurm-Token";
  const ORDER = ["D", "R", "P", "F", "C", "?"];
  const NAMES = { P: "PENDING", R: "RUNNING", D: "DONE", F: "FAILED", C: "CANCELLED", "?": "UNKNOWN" };
  const CODE = { PENDING: "P", RUNNING: "R", DONE: "D", FAILED: "F", CANCELLED: "C" };
  const css = getComputedStyle(document.documentElement);
  const COLOR = {
    P: css.getPropertyValue("--pending").trim() || "#fcc419",
    R: css.getPropertyValue("--running").trim() || "#339af0",
    D: css.getPropertyValue("--done").trim() || "#51cf66",
    F: css.getPropertyValue("--failed").trim() || "#fa5252",
    C: css.getPropertyValue("--cancelled").trim() || "#adb5bd",
    "?": "#dee2e6",
  };
  const FILL = { PENDING: "#fff9db", RUNNING: "#e7f5ff", DONE: "#ebfbee", FAILED: "#fff5f5", CANCELLED: "#f8f9fa" };
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";

  const S = {
    run: params.get("run") || null,
    el: parseEl(params.get("el")),
    aj: params.get("aj") || null,
    tab: params.get("tab") || "graph",
    log: "out",
    structure: null,
    states: null,
    runs: null,
    nodes: {},   // array job id -> {g, rect, bar, counts}
    sent: {},    // array job id -> last states string drawn
    es: null,
    timelineAt: 0,
  };
  window.lazyslurmDashboard = S; // for scripts that drive the page

  function parseEl(text) {
    if (!text) return null;
    const k = text.lastIndexOf(":");
    if (k < 0) return null;
    const i = parseInt(text.slice(k + 1), 10);
    return isNaN(i) ? null : { aj: text.slice(0, k), i: i };
  }

  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") e.textContent = v;
      else if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid);
    return e;
  }
  function s(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }

  function age(created) {
    if (!created) return "";
    const d = Math.max(0, Date.now() / 1000 - created);
    if (d < 60) return Math.floor(d) + "s";
    if (d < 3600) return Math.floor(d / 60) + "m";
    if (d < 86400) return Math.floor(d / 3600) + "h" + String(Math.floor((d % 3600) / 60)).padStart(2, "0");
    return Math.floor(d / 86400) + "d";
  }
  function when(t) {
    if (t === null || t === undefined) return "-";
    const d = new Date(t * 1000);
    return d.toLocaleString();
  }
  function dur(sec) {
    if (sec === null || sec === undefined) return "-";
    sec = Math.round(sec);
    const hh = Math.floor(sec / 3600), mm = Math.floor((sec % 3600) / 60), ss = sec % 60;
    return (hh ? hh + "h" : "") + (hh || mm ? String(mm).padStart(hh ? 2 : 1, "0") + "m" : "") + String(ss).padStart(hh || mm ? 2 : 1, "0") + "s";
  }
  function num(v, digits) {
    if (v === null || v === undefined) return "unbounded";
    if (v === 0) return "0";
    return v < 100 ? v.toPrecision(digits || 3).replace(/\.?0+$/, "") : Math.round(v).toLocaleString();
  }
  function mem(mb) {
    if (mb === null || mb === undefined) return "?";
    return mb >= 1024 ? (mb / 1024).toFixed(mb % 1024 ? 1 : 0) + "G" : Math.round(mb) + "M";
  }
  function countStates(str) {
    const c = { P: 0, R: 0, D: 0, F: 0, C: 0, "?": 0 };
    for (let k = 0; k < str.length; k++) c[str[k]] = (c[str[k]] || 0) + 1;
    return c;
  }
  function overall(c) {
    if (c.R) return "RUNNING";
    if (c.P) return "PENDING";
    if (c.F) return "FAILED";
    if (c.C) return "CANCELLED";
    return "DONE";
  }
  function countText(c) {
    return ORDER.filter((k) => c[k]).map((k) => c[k] + " " + NAMES[k].toLowerCase()).join(" · ");
  }

  // ------------------------------------------------------------------ URL, requests
  function syncUrl() {
    const p = new URLSearchParams();
    p.set("token", TOKEN);
    if (S.run) p.set("run", S.run);
    if (S.run && S.aj) p.set("aj", S.aj);
    if (S.run && S.el) p.set("el", S.el.aj + ":" + S.el.i);
    if (S.run && S.tab !== "graph") p.set("tab", S.tab);
    history.replaceState(null, "", "?" + p.toString());
  }
  async function api(path) {
    const r = await fetch(path, { headers: { [HEADER]: TOKEN }, cache: "no-store" });
    const data = await r.json();
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  }
  async function post(path, fields) {
    const body = new URLSearchParams(fields || {});
    const r = await fetch(path, { method: "POST", headers: { [HEADER]: TOKEN }, body: body });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  }
  function runPath(rest) {
    return "/api/run/" + encodeURIComponent(S.run) + (rest || "");
  }

  // ------------------------------------------------------------------ the stream
  function connect() {
    if (S.es) S.es.close();
    const p = new URLSearchParams({ token: TOKEN });
    if (S.run) p.set("run", S.run);
    if (S.run && S.el) p.set("el", S.el.aj + ":" + S.el.i);
    const es = new EventSource("/api/events?" + p.toString());
    S.es = es;
    es.onopen = () => setConn("live");
    es.onerror = () => setConn(es.readyState === 2 ? "lost" : "connecting");
    const on = (name, fn) => es.addEventListener(name, (ev) => { if (S.es === es) fn(JSON.parse(ev.data)); });
    on("runs", renderRuns);
    on("structure", (d) => { if (d.id === S.run) { S.structure = d; renderStructure(); renderStates(); } });
    on("states", (d) => { if (d.id === S.run) { S.states = d; renderStates(); } });
    on("element", renderElement);
    on("log", appendLog);
    on("failure", (d) => showBanner(d.error));
  }
  function setConn(state) {
    const c = $("conn");
    c.dataset.state = state;
    c.textContent = state === "live" ? "live" : state === "lost" ? "disconnected" : "connecting";
  }
  function showBanner(text) {
    const b = $("banner");
    b.hidden = !text;
    b.textContent = text || "";
  }

  // ------------------------------------------------------------------ runs
  function renderRuns(data) {
    S.runs = data;
    const c = data.cluster || {};
    $("cluster").textContent = (c.profile ? c.profile + " · " : "") + c.backend + " · " + c.workdir;
    const err = $("runs-error");
    err.hidden = !data.error;
    err.textContent = data.error || "";
    const body = $("runs").tBodies[0];
    body.replaceChildren();
    for (const r of data.runs) {
      const tr = h("tr", { "data-run": r.id, "data-state": r.state, class: r.id === S.run ? "on" : "",
        onclick: () => selectRun(r.id) },
        h("td", {}, h("span", { class: "id", text: r.id }), r.label ? h("span", { class: "label", text: r.label, title: r.label }) : null),
        h("td", {}, h("span", { class: "badge", "data-state": r.state, text: r.state })),
        h("td", { text: age(r.created), title: when(r.created) }),
        h("td", { class: "num", text: r.done + "/" + r.tasks }),
        h("td", { class: "num", text: String(r.failed || 0) }));
      body.append(tr);
    }
    $("runs-empty").hidden = data.runs.length > 0;
  }
  setInterval(() => { if (S.runs) renderRuns(S.runs); }, 10000); // ages move on

  function selectRun(id) {
    if (id === S.run) return;
    S.run = id; S.structure = null; S.states = null; S.aj = null; S.el = null;
    S.nodes = {}; S.sent = {}; S.timelineAt = 0;
    $("element").hidden = true;
    for (const tr of $("runs").querySelectorAll("tr[data-run]")) tr.classList.toggle("on", tr.dataset.run === id);
    showRun();
    syncUrl();
    connect();
  }
  function showRun() {
    $("empty").hidden = !!S.run;
    $("run").hidden = !S.run;
    $("run-title").textContent = S.run || "";
    if (!S.structure) {
      $("run-state").textContent = "loading";
      $("dag").replaceChildren();
      $("aj-panel").hidden = true;
      $("failures").replaceChildren();
      showBanner("");
    }
    showTab(S.tab);
  }

  // ------------------------------------------------------------------ the DAG
  const NW = 200, NH = 66, GX = 28, GY = 58, PAD = 18;
  function upstreams(aj) {
    const ups = aj.dependencies.map((d) => d[1]).concat(aj.after);
    if (aj.parent && !ups.includes(aj.parent)) ups.push(aj.parent);
    return ups;
  }
  function layout(ajs) {
    const stages = new Map();
    for (const aj of ajs) {
      if (!stages.has(aj.stage)) stages.set(aj.stage, []);
      stages.get(aj.stage).push(aj);
    }
    const keys = [...stages.keys()].sort((a, b) => a - b);
    const pos = {};
    let widest = 1;
    keys.forEach((stage, row) => {
      const nodes = stages.get(stage).map((aj, k) => {
        const ups = upstreams(aj).filter((u) => pos[u]);
        const bc = ups.length ? ups.reduce((t, u) => t + pos[u].x, 0) / ups.length : k * (NW + GX);
        return [bc, k, aj];
      }).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      nodes.forEach(([, , aj], k) => { pos[aj.id] = { x: k * (NW + GX), y: PAD + row * (NH + GY), row: row }; });
      widest = Math.max(widest, nodes.length);
    });
    const width = PAD * 2 + widest * (NW + GX) - GX;
    // centre each row
    keys.forEach((stage) => {
      const row = stages.get(stage);
      const used = row.length * (NW + GX) - GX;
      const off = PAD + (width - PAD * 2 - used) / 2;
      for (const aj of row) pos[aj.id].x += off;
    });
    return { pos: pos, width: width, height: PAD * 2 + keys.length * (NH + GY) - GY };
  }
  function renderStructure() {
    const st = S.structure;
    if (!st) return;
    $("run-title").textContent = st.id;
    const total = st.array_jobs.reduce((t, aj) => t + aj.size, 0);
    $("run-meta").textContent = [st.label ? "“" + st.label + "”" : "", "backend " + st.backend,
      st.created ? "submitted " + when(st.created) : "", st.array_jobs.length + " array jobs, " + total + " elements"]
      .filter(Boolean).join(" · ");
    const svg = $("dag");
    svg.replaceChildren();
    S.nodes = {}; S.sent = {};
    const lay = layout(st.array_jobs);
    svg.setAttribute("width", lay.width);
    svg.setAttribute("height", lay.height);
    svg.setAttribute("viewBox", "0 0 " + lay.width + " " + lay.height);
    const defs = s("defs");
    const marker = s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" });
    marker.append(s("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#868e96" }));
    defs.append(marker);
    svg.append(defs);
    const edges = s("g", { class: "edges" });
    const ids = new Set(st.array_jobs.map((aj) => aj.id));
    for (const aj of st.array_jobs) {
      const list = aj.dependencies.map((d) => [d[1], d[0]]).concat(aj.after.map((u) => [u, "ordering"]));
      if (aj.parent && !list.some((e) => e[0] === aj.parent)) list.push([aj.parent, "spawned"]);
      for (const [up, kind] of list) {
        if (!ids.has(up)) continue;
        const a = lay.pos[up], b = lay.pos[aj.id];
        const x1 = a.x + NW / 2, y1 = a.y + NH, x2 = b.x + NW / 2, y2 = b.y;
        const dy = Math.max(20, (y2 - y1) / 2);
        edges.append(s("path", { class: "edge " + kind, d: `M ${x1} ${y1} C ${x1} ${y1 + dy} ${x2} ${y2 - dy} ${x2} ${y2 - 1}`,
          "marker-end": "url(#arrow)", "data-from": up, "data-to": aj.id, "data-kind": kind }));
        if (kind !== "afterok") {
          const t = s("text", { class: "edge-label", x: (x1 + x2) / 2 + 4, y: (y1 + y2) / 2 });
          t.textContent = kind;
          edges.append(t);
        }
      }
    }
    svg.append(edges);
    for (const aj of st.array_jobs) {
      const p = lay.pos[aj.id];
      const g = s("g", { class: "aj" + (aj.parent ? " sub" : ""), "data-aj": aj.id, "data-name": aj.name,
        "data-size": aj.size, "data-stage": aj.stage, transform: `translate(${p.x},${p.y})` });
      const title = s("title");
      const res = Object.entries(aj.resources).map(([k, v]) => k + " " + v).join(", ");
      title.textContent = `${aj.name} (${aj.id}${aj.slurm_id ? ", Slurm job " + aj.slurm_id : ""})\n${aj.size} elements, stage ${aj.stage}` +
        (aj.pack > 1 ? `, ${aj.pack} per Slurm element` : "") + (res ? "\n" + res : "") +
        (aj.parent ? "\nsubmitted by an element of " + aj.parent : "");
      g.append(title);
      const rect = s("rect", { class: "box", width: NW, height: NH, rx: 6, fill: "#fff" });
      g.append(rect);
      const name = s("text", { class: "name", x: 8, y: 17 });
      name.textContent = (aj.name.length > 24 ? aj.name.slice(0, 23) + "…" : aj.name) + (aj.nchunks > 1 ? ` ${aj.chunk + 1}/${aj.nchunks}` : "");
      g.append(name);
      const sub = s("text", { x: 8, y: 32 });
      sub.textContent = aj.id + " · " + aj.size + (aj.size === 1 ? " element" : " elements") + (aj.slurm_id ? " · job " + aj.slurm_id : "");
      g.append(sub);
      const bar = s("g", { transform: "translate(8,40)" });
      g.append(bar);
      const counts = s("text", { class: "counts", x: 8, y: 61 });
      g.append(counts);
      g.addEventListener("click", () => selectAj(aj.id));
      svg.append(g);
      S.nodes[aj.id] = { g: g, rect: rect, bar: bar, counts: counts, aj: aj };
    }
    if (!S.aj || !ids.has(S.aj)) {
      const big = st.array_jobs.slice().sort((a, b) => b.size - a.size)[0];
      S.aj = big ? big.id : null;
    }
    renderLegend();
    showAj();
  }
  function renderLegend() {
    const l = $("legend");
    l.replaceChildren();
    for (const k of ["P", "R", "D", "F", "C"]) {
      const i = h("i");
      i.style.background = COLOR[k];
      l.append(h("span", {}, i, NAMES[k].toLowerCase()));
    }
    l.append(h("span", { class: "muted", text: "— dashed: ordering only; dotted: a subgraph an element submitted" }));
  }
  function drawBar(node, c, size) {
    const W = NW - 16;
    node.bar.replaceChildren();
    let x = 0;
    for (const k of ORDER) {
      if (!c[k]) continue;
      const w = (c[k] / size) * W;
      node.bar.append(s("rect", { x: x, y: 0, width: Math.max(w, 1), height: 8, fill: COLOR[k] }));
      x += w;
    }
    node.bar.append(s("rect", { x: 0, y: 0, width: W, height: 8, fill: "none", stroke: "#ced4da" }));
  }

  // ------------------------------------------------------------------ states
  function renderStates() {
    const st = S.structure, d = S.states;
    if (!st || !d) return;
    const counts = d.counts || {};
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    const badge = $("run-state");
    badge.textContent = d.state;
    badge.dataset.state = d.state;
    $("run").dataset.state = d.state;
    $("run-counts").textContent = total ? (counts.DONE || 0) + "/" + total + " done" +
      (counts.RUNNING ? " · " + counts.RUNNING + " running" : "") + (counts.PENDING ? " · " + counts.PENDING + " pending" : "") +
      (counts.FAILED ? " · " + counts.FAILED + " failed" : "") + (counts.CANCELLED ? " · " + counts.CANCELLED + " cancelled" : "") : "";
    const unfinished = (counts.PENDING || 0) + (counts.RUNNING || 0);
    $("cancel-run").disabled = !unfinished;
    const notes = [];
    if (d.error) notes.push("cannot read the run's state: " + d.error);
    if (d.unreachable) notes.push("the cluster is unreachable (states are the last known): " + d.unreachable);
    showBanner(notes.join("\n"));
    const now = Date.now();
    for (const [id, node] of Object.entries(S.nodes)) {
      const str = d.states[id] || "";
      if (S.sent[id] === str) continue;
      const size = node.aj.size;
      const full = str.length ? str : "P".repeat(size);
      const c = countStates(full);
      const state = overall(c);
      node.g.dataset.state = state;
      node.g.dataset.counts = JSON.stringify(c);
      node.g.dataset.changedAt = String(now);
      node.rect.setAttribute("fill", FILL[state]);
      drawBar(node, c, size);
      node.counts.textContent = countText(c);
      S.sent[id] = str;
    }
    drawGrid();
    renderFailures();
    if (S.tab === "timeline" && Date.now() - S.timelineAt > 5000) loadTimeline();
    document.body.dataset.ready = "1";
  }
  function renderFailures() {
    const d = S.states, box = $("failures");
    box.replaceChildren();
    if (!d || !d.nfailures) return;
    const names = {};
    for (const aj of S.structure.array_jobs) names[aj.id] = aj.name;
    const rows = d.failures.map(([aj, i, state, code, reason]) =>
      h("tr", { "data-el": aj + ":" + i, onclick: () => selectElement(aj, i) },
        h("td", { text: aj + "[" + i + "]" }), h("td", { text: names[aj] || "" }),
        h("td", {}, h("span", { class: "badge", "data-state": state === "CANCELLED" ? "CANCELLED" : "FAILED", text: state })),
        h("td", { text: code || "" }), h("td", { text: reason || "" })));
    box.append(h("h2", { text: "Failed and cancelled elements (" + d.nfailures + ")" }),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", { text: "element" }), h("th", { text: "task" }),
        h("th", { text: "state" }), h("th", { text: "exit" }), h("th", { text: "reason" }))), h("tbody", {}, ...rows)));
    if (d.nfailures > d.failures.length) box.append(h("p", { class: "muted", text: "… and " + (d.nfailures - d.failures.length) + " more: pick them in the grid" }));
  }

  // ------------------------------------------------------------------ elements grid
  function selectAj(id) {
    S.aj = id;
    syncUrl();
    showAj();
  }
  function currentAj() {
    return S.structure && S.structure.array_jobs.find((aj) => aj.id === S.aj);
  }
  function showAj() {
    for (const [id, node] of Object.entries(S.nodes)) node.g.classList.toggle("on", id === S.aj);
    const aj = currentAj();
    $("aj-panel").hidden = !aj;
    if (!aj) return;
    $("aj-title").textContent = aj.name + " · " + aj.id + " · " + aj.size + (aj.size === 1 ? " element" : " elements");
    $("el-index").max = String(aj.size - 1);
    drawGrid(true);
  }
  function gridGeometry(n, width) {
    const cell = n <= 100 ? 16 : n <= 1000 ? 10 : n <= 5000 ? 7 : 5;
    const cols = Math.max(1, Math.min(n, Math.floor(width / cell)));
    return { cell: cell, cols: cols, rows: Math.ceil(n / cols) };
  }
  function drawGrid(force) {
    const aj = currentAj();
    if (!aj || !S.states) return;
    const str = S.states.states[aj.id] || "P".repeat(aj.size);
    const canvas = $("grid");
    if (!force && canvas.dataset.aj === aj.id && canvas.dataset.states === str) return;
    const width = Math.max(200, $("grid-wrap").clientWidth || 800);
    const g = gridGeometry(aj.size, width);
    const ratio = window.devicePixelRatio || 1;
    canvas.width = g.cols * g.cell * ratio;
    canvas.height = g.rows * g.cell * ratio;
    canvas.style.width = g.cols * g.cell + "px";
    canvas.style.height = g.rows * g.cell + "px";
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, g.cols * g.cell, g.rows * g.cell);
    const gap = g.cell > 6 ? 1 : 0.5;
    for (const code of ORDER) {
      ctx.fillStyle = COLOR[code];
      for (let i = 0; i < str.length; i++) {
        if (str[i] !== code) continue;
        ctx.fillRect((i % g.cols) * g.cell, Math.floor(i / g.cols) * g.cell, g.cell - gap, g.cell - gap);
      }
    }
    if (S.el && S.el.aj === aj.id && S.el.i < aj.size) {
      ctx.strokeStyle = "#1c7ed6";
      ctx.lineWidth = 2;
      ctx.strokeRect((S.el.i % g.cols) * g.cell, Math.floor(S.el.i / g.cols) * g.cell, g.cell - gap, g.cell - gap);
    }
    canvas.dataset.aj = aj.id;
    canvas.dataset.states = str;
    canvas.dataset.cell = String(g.cell);
    canvas.dataset.cols = String(g.cols);
    canvas.dataset.changedAt = String(Date.now());
    $("cancel-aj").disabled = !/[PR]/.test(str);
  }
  function gridIndex(ev) {
    const canvas = $("grid"), aj = currentAj();
    if (!aj) return -1;
    const cell = +canvas.dataset.cell, cols = +canvas.dataset.cols;
    const col = Math.floor(ev.offsetX / cell), row = Math.floor(ev.offsetY / cell);
    const i = row * cols + col;
    return col < cols && i >= 0 && i < aj.size ? i : -1;
  }
  $("grid").addEventListener("click", (ev) => {
    const i = gridIndex(ev);
    if (i >= 0) selectElement(S.aj, i);
  });
  $("grid").addEventListener("mousemove", (ev) => {
    const i = gridIndex(ev), aj = currentAj();
    const str = aj && S.states ? S.states.states[aj.id] || "" : "";
    $("grid-hover").textContent = i >= 0 ? aj.id + "[" + i + "] " + NAMES[str[i] || "P"] : "\u00a0";
  });
  $("el-go").addEventListener("click", () => {
    const i = parseInt($("el-index").value, 10);
    if (S.aj && !isNaN(i)) selectElement(S.aj, i);
  });
  $("el-index").addEventListener("keydown", (ev) => { if (ev.key === "Enter") $("el-go").click(); });

  // ------------------------------------------------------------------ an element
  function selectElement(aj, i) {
    S.el = { aj: aj, i: i };
    if (S.aj !== aj) { S.aj = aj; showAj(); } else drawGrid(true);
    $("element").hidden = false;
    $("el-title").textContent = aj + "[" + i + "]";
    $("el-facts").replaceChildren(h("dt", { text: "state" }), h("dd", { text: "loading…" }));
    $("el-error").hidden = true;
    $("el-attempts").replaceChildren();
    $("element").dataset.state = "";
    for (const st of ["out", "err"]) $("log-" + st).textContent = "";
    syncUrl();
    connect();
  }
  $("el-close").addEventListener("click", () => {
    S.el = null;
    $("element").hidden = true;
    syncUrl();
    drawGrid(true);
    connect();
  });
  function renderElement(d) {
    if (!S.el || d.array_job !== S.el.aj || d.index !== S.el.i) return;
    const box = $("element");
    box.dataset.key = d.key;
    box.dataset.state = d.state;
    $("el-title").textContent = d.task + " · " + d.array_job + "[" + d.index + "]";
    const facts = [["state", d.state], ["key", d.key], ["Slurm id", d.slurm_id || "-"], ["node", d.node || "-"],
      ["start", when(d.start)], ["end", when(d.end)],
      ["elapsed", d.start ? dur((d.end || Date.now() / 1000) - d.start) : "-"]];
    if (d.failure) facts.push(["scheduler", [d.failure.state, d.failure.exit_code ? "exit " + d.failure.exit_code : "", d.failure.reason].filter(Boolean).join(" · ")]);
    if (d.attempts && d.attempts.length) facts.push(["attempts", String(d.attempts.length) + (d.attempts.length > 1 ? " (requeued " + (d.attempts.length - 1) + "×)" : "")]);
    if (d.packed) facts.push(["packed", "its Slurm element runs several elements; the logs shown are this element's section"]);
    facts.push(["logs", d.logs.join("\n")]);
    const dl = $("el-facts");
    dl.replaceChildren();
    for (const [k, v] of facts) dl.append(h("dt", { text: k }), h("dd", { text: v, "data-fact": k }));
    const err = d.error;
    $("el-error").hidden = !err;
    if (err) {
      $("el-error-title").textContent = err.type + ": " + err.message.split("\n")[0];
      $("el-traceback").textContent = err.traceback || err.message;
    }
    const at = $("el-attempts");
    at.replaceChildren();
    if (d.attempts && d.attempts.length > 1) {
      at.append(h("h3", { text: "Attempts" }), h("table", {}, h("tbody", {}, ...d.attempts.map((a, k) =>
        h("tr", {}, h("td", { text: "#" + (a.attempt || k + 1) }), h("td", { text: a.state }), h("td", { text: a.node }),
          h("td", { text: when(a.start) }), h("td", { text: when(a.end) }), h("td", { text: a.exit_code }),
          h("td", { text: "asked " + (a.mem_mb ? mem(a.mem_mb) : "?") + (a.time_min ? " · " + a.time_min + " min" : "") }),
          h("td", { text: "peak " + (a.max_rss_mb === null || a.max_rss_mb === undefined ? "-" : mem(a.max_rss_mb)) })))))) ;
    }
  }
  function appendLog(d) {
    const pre = $("log-" + d.stream);
    const follow = $("follow").checked;
    if (d.mode === "append") pre.append(document.createTextNode(d.text));
    else pre.textContent = (d.truncated ? "[… earlier output not shown]\n" : "") + d.text;
    pre.dataset.length = String(pre.textContent.length);
    if (follow) pre.scrollTop = pre.scrollHeight;
  }
  for (const b of document.querySelectorAll(".logtabs button")) {
    b.addEventListener("click", () => {
      S.log = b.dataset.log;
      for (const o of document.querySelectorAll(".logtabs button")) o.classList.toggle("on", o === b);
      $("log-out").hidden = S.log !== "out";
      $("log-err").hidden = S.log !== "err";
    });
  }

  // ------------------------------------------------------------------ tabs
  function showTab(tab) {
    S.tab = tab;
    for (const b of $("tabs").querySelectorAll("button")) b.classList.toggle("on", b.dataset.tab === tab);
    for (const t of ["graph", "timeline", "resources"]) $("tab-" + t).hidden = t !== tab;
    if (tab === "timeline") loadTimeline();
    if (tab === "resources") loadResources();
    syncUrl();
  }
  for (const b of $("tabs").querySelectorAll("button")) b.addEventListener("click", () => showTab(b.dataset.tab));

  let timeline = null;
  async function loadTimeline() {
    if (!S.run) return;
    S.timelineAt = Date.now();
    try {
      timeline = await api(runPath("/timeline"));
      drawTimeline();
    } catch (e) {
      $("timeline-note").textContent = "cannot read the timeline: " + e.message;
    }
  }
  function timelineRows() {
    const rows = [];
    if (!timeline || !S.structure) return rows;
    for (const aj of S.structure.array_jobs) {
      const t = timeline.array_jobs[aj.id];
      if (!t) continue;
      const str = S.states ? S.states.states[aj.id] || "" : "";
      for (let i = 0; i < aj.size; i++) rows.push({ aj: aj.id, name: aj.name, i: i, start: t.start[i], end: t.end[i], code: str[i] || "P" });
    }
    return rows;
  }
  function drawTimeline() {
    const rows = timelineRows();
    const started = rows.filter((r) => r.start !== null || r.end !== null);
    $("timeline-note").textContent = (timeline.source === "sacct" ? "start and end from sacct" : "from the run's files: a log's creation, a result's last write") +
      " · " + started.length + " of " + rows.length + " elements started";
    const canvas = $("timeline");
    const W = Math.max(400, ($("timeline-wrap").clientWidth || 900) - 4), LEFT = 160;
    const rh = rows.length <= 60 ? 12 : rows.length <= 600 ? 3 : 1;
    const H = Math.min(Math.max(40, rows.length * rh + 30), 4000);
    const ratio = window.devicePixelRatio || 1;
    canvas.width = W * ratio; canvas.height = H * ratio;
    canvas.style.width = W + "px"; canvas.style.height = H + "px";
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, W, H);
    const times = [];
    for (const r of started) { if (r.start !== null) times.push(r.start); if (r.end !== null) times.push(r.end); }
    const t0 = times.length ? Math.min(...times) : timeline.now;
    const t1 = Math.max(timeline.now, times.length ? Math.max(...times) : timeline.now);
    const span = Math.max(1, t1 - t0);
    const x = (t) => LEFT + ((t - t0) / span) * (W - LEFT - 10);
    const scale = (H - 30) / Math.max(1, rows.length);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#868e96";
    for (let k = 0; k <= 4; k++) {
      const t = t0 + (span * k) / 4;
      ctx.fillText(new Date(t * 1000).toLocaleTimeString(), x(t) - 24, H - 6);
      ctx.fillRect(x(t), 0, 0.5, H - 20);
    }
    let last = null;
    rows.forEach((r, k) => {
      const y = k * scale;
      if (r.aj !== last) {
        last = r.aj;
        ctx.fillStyle = "#495057";
        ctx.fillText((r.name + " " + r.aj).slice(0, 26), 4, y + 10);
        ctx.fillStyle = "#e9ecef";
        ctx.fillRect(LEFT, y, W - LEFT, 0.5);
      }
      if (r.start === null && r.end === null) return;
      const a = r.start !== null ? r.start : r.end;
      const b = r.end !== null ? r.end : timeline.now;
      ctx.fillStyle = COLOR[r.code] || COLOR["?"];
      ctx.fillRect(x(a), y, Math.max(2, x(b) - x(a)), Math.max(1, scale - (scale > 3 ? 1 : 0)));
    });
    canvas.onclick = (ev) => {
      const k = Math.floor(ev.offsetY / scale);
      if (rows[k]) selectElement(rows[k].aj, rows[k].i);
    };
    canvas.onmousemove = (ev) => {
      const r = rows[Math.floor(ev.offsetY / scale)];
      $("timeline-hover").textContent = r ? `${r.aj}[${r.i}] ${NAMES[r.code]} · start ${when(r.start)} · end ${when(r.end)}` +
        (r.start !== null && r.end !== null ? " · " + dur(r.end - r.start) : "") : "\u00a0";
    };
    canvas.dataset.rows = String(rows.length);
    canvas.dataset.started = String(started.length);
    canvas.dataset.source = timeline.source;
  }

  async function loadResources() {
    const st = S.structure;
    if (!st) return;
    const c = st.cost, t = c.total;
    const head = ["array job", "task", "stage", "elements", "throttle", "cpus", "mem", "gpus", "time", "partition", "core-h", "GPU-h", "GB-h"];
    const rows = c.jobs.map((j) => [j.id, j.name, j.stage, j.elements, j.throttle || "-", j.cpus, mem(j.mem_mb), j.gpus,
      j.time_min === null ? "unbounded" : j.time_min + " min", j.partition || "default", num(j.core_hours), num(j.gpu_hours), num(j.mem_gb_hours)]);
    const notes = [];
    for (const j of c.jobs) for (const a of j.assumptions) notes.push(j.id + ": " + a);
    $("cost").replaceChildren(
      h("p", { text: `${t.array_jobs} array jobs, ${t.elements} elements in ${t.stages} stages, at most ${t.at_once} at once. ` +
        `Worst case (every element running to its time limit): ${num(t.core_hours)} core-hours, ${num(t.gpu_hours)} GPU-hours, ${num(t.mem_gb_hours)} GB-hours of memory.` }),
      table(head, rows, 3),
      notes.length ? h("details", {}, h("summary", { text: "assumed (" + notes.length + ")" }), h("ul", {}, ...notes.map((n) => h("li", { text: n })))) : null);
    $("usage").replaceChildren(h("p", { class: "muted", text: "reading what the run used…" }));
    try {
      const u = await api(runPath("/usage"));
      const pct = (v) => (v === null || v === undefined) ? "-" : Math.round(100 * v) + "%";
      const urows = u.tasks.map((t) => {
        const r = t.request, used = t.used, ch = t.core_hours;
        return [t.task, t.measured + "/" + t.elements, mem(r.mem_mb), used.peak_mb === null ? "-" : mem(used.peak_mb), pct(t.efficiency.mem),
          r.cpus, pct(t.efficiency.cpu), r.time_min === null ? "unbounded" : r.time_min + " min", dur(used.elapsed_s), pct(t.efficiency.time),
          num(ch.reserved), num(ch.allocated), num(ch.wasted), Object.entries(t.suggest).map(([k, v]) => k + "=" + v).join(" ") || "-"];
      });
      const warnings = u.warnings.length ? h("ul", { class: "warnings" }, ...u.warnings.map((w) => h("li", { class: "error", text: w }))) : null;
      const learned = u.tasks.filter((t) => t.learned).map((t) => h("li", { text: t.task + ": learned from " + t.learned.runs + " run(s) (" + t.learned.elements + " elements)" }));
      $("usage").replaceChildren(
        h("p", { class: "muted", text: u.summary + (u.note ? " · " + u.note : "") }),
        table(["task", "measured", "mem asked", "peak", "mem %", "cpus", "cpu %", "time asked", "longest", "time %", "worst core-h", "core-h", "idle core-h", "suggested"], urows, 1),
        warnings,
        learned.length ? h("ul", {}, ...learned) : null);
      $("usage").dataset.source = u.source;
    } catch (e) {
      $("usage").replaceChildren(h("p", { class: "error", text: "cannot read the usage: " + e.message }));
    }
  }
  function table(head, rows, firstNum) {
    return h("div", { class: "scroll" }, h("table", {}, h("thead", {}, h("tr", {}, ...head.map((x) => h("th", { text: x })))),
      h("tbody", {}, ...rows.map((r) => h("tr", {}, ...r.map((v, k) => h("td", { text: String(v), class: k >= firstNum ? "num" : null })))))));
  }

  // ------------------------------------------------------------------ actions
  $("cancel-run").addEventListener("click", async () => {
    const b = $("cancel-run");
    b.disabled = true;
    try {
      const r = await post(runPath("/cancel"));
      showBanner("");
      b.title = "cancelled " + r.cancelled + " unfinished elements";
    } catch (e) { showBanner("cancel failed: " + e.message); b.disabled = false; }
  });
  $("cancel-aj").addEventListener("click", async () => {
    const b = $("cancel-aj");
    b.disabled = true;
    try { await post(runPath("/cancel"), { array_job: S.aj }); }
    catch (e) { showBanner("cancel failed: " + e.message); b.disabled = false; }
  });
  $("reattach").addEventListener("click", async () => {
    try {
      await post(runPath("/attach"));
      S.structure = null; S.states = null;
      connect();
    } catch (e) { showBanner("re-attach failed: " + e.message); }
  });
  window.addEventListener("resize", () => { drawGrid(true); if (S.tab === "timeline" && timeline) drawTimeline(); });

  // ------------------------------------------------------------------ start
  const init = JSON.parse($("lz-init").textContent || "{}");
  if (S.run) {
    showRun();
    if (init.run && init.run.structure && init.run.structure.id === S.run) {
      S.structure = init.run.structure;
      S.states = init.run.states;
      renderStructure();
      renderStates();
      performance.mark("lz-rendered"); // the run's DAG and grid are drawn
    }
  }
  if (init.runs) renderRuns(init.runs);
  if (S.run) {
    if (init.error) showBanner(init.error);
    if (S.el) selectElement(S.el.aj, S.el.i);
    else connect();
  } else {
    connect();
  }
})();
