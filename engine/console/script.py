"""The console page's one script (served as /console.js): live updates over server-sent events, and actions.

It keeps the latest snapshot and bounded lists of recent events, and redraws only the sections that
changed, at most once per animation frame, so a busy session (1,000 fills/s) costs the page a few
table rebuilds per frame, not one per event. Actions are POSTs of JSON with the page's CSRF token.
"""
SCRIPT = r"""
"use strict";
(() => {
  const role = document.body.dataset.role, canAct = role === "trader";
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const KEEP = {fill: 100, risk: 200, audit: 200, equity: 2000};   // the run folder keeps them all
  const lists = {fill: [], risk: [], audit: [], equity: []};
  let snap = null, offset = 0, frame = 0, es = null;
  const dirty = new Set(), shown = {};

  const formats = {};   // one Intl.NumberFormat per precision: making one per number costs ~30 us
  const num = (v, d = 2) => (v === null || v === undefined || v === "") ? "" : typeof v !== "number" ? String(v) :
    (formats[d] || (formats[d] = new Intl.NumberFormat("en-US", {maximumFractionDigits: d}))).format(v);
  const time = (iso) => iso ? String(iso).replace("T", " ").replace(/\+00:00$|Z$/, "") : "";
  function cell(v, cls) {
    const td = document.createElement("td");
    if (v instanceof Node) td.appendChild(v); else td.textContent = v === null || v === undefined ? "" : String(v);
    if (cls) td.className = cls;
    return td;
  }
  function signed(v) { return cell(num(v), v > 0 ? "pos" : v < 0 ? "neg" : ""); }
  // Rows are keyed (an order id, a symbol, an event id) and rebuilt only when what they show changed, so a
  // typed reason survives a snapshot and a busy session costs the page only the rows that moved.
  function fill(id, heads, rows, empty, dataKey) {
    const t = $(id);
    if (!t.tHead) {
      const hr = t.createTHead().insertRow();
      for (const h of heads) { const th = document.createElement("th"); th.textContent = h; hr.appendChild(th); }
    }
    const tbody = t.tBodies[0], prev = t.keyed || new Map(), next = new Map(), out = [];
    if (!rows.length) {
      const tr = document.createElement("tr"), td = cell(empty, "empty"); td.colSpan = heads.length;
      tr.appendChild(td); out.push(tr);
    }
    rows.forEach((r, i) => {
      const sig = r.sig !== undefined ? r.sig :
        r.cells.map((c) => c instanceof Node ? `${c.className}|${c.textContent}` : String(c ?? "")).join("\u241f");
      const key = r.key !== undefined ? String(r.key) : `${i}\u241f${sig}`;
      const old = prev.get(key);
      let tr = old && old.sig === sig ? old.tr : null;
      if (!tr) {
        tr = document.createElement("tr");
        if (r.key !== undefined) tr.dataset[dataKey || "id"] = r.key;
        for (const c of r.cells) tr.appendChild(c instanceof Node && c.tagName === "TD" ? c : cell(c));
      }
      next.set(key, {tr, sig}); out.push(tr);
    });
    const cur = tbody.children;
    if (cur.length !== out.length || out.some((tr, i) => cur[i] !== tr)) tbody.replaceChildren(...out);
    t.keyed = next;
  }
  function button(label, body, cls) {
    const b = document.createElement("button");
    b.textContent = label; b.disabled = !canAct; if (cls) b.className = cls;
    b.addEventListener("click", () => act(body()));
    return b;
  }
  function say(ok, text) { const m = $("msg"); m.textContent = text; m.className = ok ? "ok" : "fail"; }
  async function act(body) {
    if (!canAct) return;
    let r, out;
    try {
      r = await fetch("/api/action", {method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: JSON.stringify(body)});
      out = await r.json();
    } catch (e) { out = {ok: false, message: r ? `${r.status} ${r.statusText}` : String(e)}; }
    say(!!out.ok, out.message || (r && r.statusText) || "no answer");
    if (r && r.status === 401) location.href = "/login";
  }
  const why = () => $("why").value;
  const sym = () => $("sym").value.trim();

  // ---------------------------------------------------------------- sections
  function badge(text, kind) {
    const s = document.createElement("span"); s.className = "badge " + (kind || ""); s.textContent = text; return s;
  }
  const listed = (xs) => xs && xs.length ? xs.join(", ") : "";
  function drawStatus() {
    const s = (snap && snap.session) || null, out = [];
    if (!s) { $("status").replaceChildren(badge("waiting for the session to publish its state", "warn")); return; }
    out.push(badge(`${s.mode} · ${s.strategy} · ${s.run_id}`));
    out.push(badge(`FIX ${s.fix}`, s.fix === "logged_on" ? "ok" : s.fix === "n/a" ? "" : "bad"));
    out.push(badge(`MQTT ${s.mqtt}`, s.mqtt === "connected" ? "ok" : "bad"));
    out.push(listed(s.stale) ? badge(`stale: ${listed(s.stale)}`, "warn") : badge("no stale symbols", "ok"));
    out.push(listed(s.halted) ? badge(`halted: ${listed(s.halted)}`, "bad") : badge("no symbol halted", "ok"));
    out.push(badge(s.book_halted ? "BOOK HALTED" : "book open", s.book_halted ? "bad" : "ok"));
    out.push(badge(s.drawdown_stop ? "DRAWDOWN STOP" : "no drawdown stop", s.drawdown_stop ? "bad" : "ok"));
    if (s.paused_for_review) out.push(badge("paused for review", "warn"));
    if (s.finished) out.push(badge("session finished", "warn"));
    out.push(badge(`updated ${time(s.updated_at)}`));
    $("status").replaceChildren(...out);
  }
  function drawAccount() {
    const a = (snap && snap.account) || {};
    fill("account", ["cash", "equity", "realized PnL", "unrealized PnL"],
         [{cells: [num(a.cash), num(a.equity), signed(a.realized_pnl), signed(a.unrealized_pnl)]}], "");
  }
  function countdown(r) {
    const s = document.createElement("span"); s.className = "countdown"; s.dataset.deadline = r.deadline_at || "";
    tick(s); return s;
  }
  function tick(s) {
    const left = (Date.parse(s.dataset.deadline) - (Date.now() + offset)) / 1000;
    if (!isFinite(left)) { s.textContent = ""; return; }
    const n = Math.max(0, Math.ceil(left));
    s.textContent = left <= 0 ? "expiring" : `${Math.floor(n / 60)}:${String(n % 60).padStart(2, "0")}`;
    s.classList.toggle("late", left < 10);
  }
  function drawReviews() {
    const rows = ((snap && snap.reviews) || []).map((r) => {
      const note = document.createElement("input");
      note.className = "reason"; note.maxLength = 500; note.placeholder = "reason"; note.disabled = !canAct;
      note.setAttribute("aria-label", `reason for ${r.order_id}`);
      const acts = document.createElement("span");
      const answer = (action) => () => ({action, order_id: r.order_id, note: note.value});
      acts.append(note, " ", button("approve", answer("approve"), "approve"), " ",
                  button("reject", answer("reject"), "reject"));
      return {key: r.order_id, sig: JSON.stringify({...r, seconds_left: 0}),
              cells: [r.order_id, r.symbol, r.side, num(r.qty, 4), num(r.price, 4), num(r.notional),
              cell(countdown(r)), cell(acts), cell(r.reason, "wrap"), time(r.held_at)]};
    });
    fill("reviews", ["order", "symbol", "side", "qty", "price", "notional", "time left", "", "why held", "held at"],
         rows, "no orders waiting for review", "order");
  }
  function drawPositions() {
    const rows = ((snap && snap.positions) || []).map((p) => ({key: p.symbol, cells: [p.symbol, num(p.qty, 4),
      num(p.avg_price, 4), num(p.last, 4), signed(p.unrealized_pnl), signed(p.realized_pnl)]}));
    fill("positions", ["symbol", "qty", "avg price", "last", "unrealized", "realized"], rows, "flat");
  }
  function drawOrders() {
    const all = (snap && snap.orders) || [];
    const rows = all.slice(0, 100).map((o) => ({key: o.id, cells: [o.id, o.symbol, o.side, o.type, num(o.qty, 4),
      num(o.filled, 4), num(o.limit_price, 4), o.status,
      cell(button("cancel", () => ({action: "cancel", order_id: o.id}), "cancel"))]}));
    if (all.length > 100) rows.push({cells: [`... and ${all.length - 100} more`, "", "", "", "", "", "", "", ""]});
    fill("orders", ["order", "symbol", "side", "type", "qty", "filled", "limit", "status", ""], rows,
         "no working orders", "order");
  }
  function drawModels() {
    const rows = ((snap && snap.models) || []).map((m) => ({key: m.name, cells: [m.name, m.version, m.state,
      num(m.p99_ms, 3), num(m.accuracy, 4), m.using_backup ? "yes" : "no"]}));
    fill("models", ["model", "version", "state", "p99 ms", "accuracy", "on backup"], rows, "no models");
  }
  function drawEvents(kind) {
    const l = lists[kind].slice().reverse();
    if (kind === "fill") fill("fills", ["at", "order", "symbol", "side", "qty", "price", "commission"], l.map((e) => ({
      key: e.id, cells: [time(e.at), e.data.order_id, e.data.symbol, e.data.side, num(e.data.qty, 4),
                         num(e.data.price, 4), num(e.data.commission)]})),
      "no fills yet", "event");
    else if (kind === "risk") fill("risk", ["at", "gate", "action", "order", "reason"], l.map((e) => ({key: e.id,
      cells: [time(e.at), e.data.gate, e.data.action, e.data.order_id || "", cell(e.data.reason, "wrap")]})),
      "no risk events", "event");
    else if (kind === "audit") fill("audit", ["at", "who", "action", "target", "phase", "ok", "message"],
      l.map((e) => ({key: e.id,
      cells: [time(e.at), e.data.who, e.data.action, e.data.target || "", e.data.phase || "",
              cell(e.data.ok ? "ok" : "refused", e.data.ok ? "pos" : "neg"), cell(e.data.message || "", "wrap")]})),
      "no operator actions yet", "event");
  }
  function drawEquity() {
    const pts = lists.equity.filter((e) => typeof e.data.equity === "number");
    const path = $("equity").querySelector("path.series");
    if (pts.length < 2) { path.setAttribute("d", ""); return; }
    let lo = Infinity, hi = -Infinity;
    for (const e of pts) { const v = e.data.equity; if (v < lo) lo = v; if (v > hi) hi = v; }
    if (hi === lo) { hi += 1; lo -= 1; }
    const n = pts.length - 1, d = [];
    pts.forEach((e, i) => {
      const x = (i / n * 1000).toFixed(1), y = (210 - (e.data.equity - lo) / (hi - lo) * 190).toFixed(1);
      d.push(`${i ? "L" : "M"}${x},${y}`);
    });
    path.setAttribute("d", d.join(""));
    $("eq-hi").textContent = num(hi); $("eq-lo").textContent = num(lo);
  }
  const DRAW = {status: drawStatus, account: drawAccount, reviews: drawReviews, positions: drawPositions,
                orders: drawOrders, models: drawModels, equity: drawEquity,
                fill: () => drawEvents("fill"), risk: () => drawEvents("risk"), audit: () => drawEvents("audit")};
  const SLOW = {positions: 200, orders: 200}, drawn = {};   // ms between redraws of the big snapshot tables
  function redraw() {
    frame = 0;
    const now = performance.now(), later = [];
    for (const k of dirty) {
      if (SLOW[k] && now - (drawn[k] || 0) < SLOW[k]) { later.push(k); continue; }
      drawn[k] = now; DRAW[k]();
    }
    dirty.clear();
    if (later.length) {
      for (const k of later) dirty.add(k);
      setTimeout(() => { if (!frame) frame = requestAnimationFrame(redraw); }, 50);
    }
  }
  function mark(k) { dirty.add(k); if (!frame) frame = requestAnimationFrame(redraw); }

  // ---------------------------------------------------------------- updates
  const SECTIONS = {status: "session", account: "account", reviews: "reviews", positions: "positions",
                    orders: "orders", models: "models"};
  function apply(m) {
    if (m.now) offset = Date.parse(m.now) - Date.now();
    if (m.reset) {
      for (const k in lists) lists[k] = [];
      for (const k in shown) delete shown[k];
      for (const k in DRAW) mark(k);
    }
    const err = $("error");
    if (m.error !== undefined) { err.textContent = m.error || ""; err.hidden = !m.error; }
    if (m.snapshot !== undefined) {
      snap = m.snapshot;
      for (const k in SECTIONS) {
        const text = JSON.stringify(snap ? snap[SECTIONS[k]] : null);
        if (k === "status" || shown[k] !== text) { shown[k] = text; mark(k); }
      }
    }
    for (const e of m.events || []) {
      const l = lists[e.kind];
      if (!l) continue;
      l.push(e);
      if (l.length > KEEP[e.kind]) l.splice(0, l.length - KEEP[e.kind]);
      mark(e.kind);
    }
  }
  function connect() {
    es = new EventSource("/events");
    es.onmessage = (ev) => apply(JSON.parse(ev.data));
    es.onerror = async () => {
      if (es.readyState !== EventSource.CLOSED) return;   // the browser retries by itself
      try {
        const r = await fetch("/api/state", {credentials: "same-origin"});
        if (r.status === 401) { location.href = "/login"; return; }
      } catch (e) { /* the server is away: try again */ }
      setTimeout(connect, 1000);
    };
  }

  // ---------------------------------------------------------------- controls
  const on = (id, f) => $(id).addEventListener("click", f);
  on("halt-book", () => act({action: "halt", symbol: "", note: why()}));
  on("resume-book", () => act({action: "resume", symbol: ""}));
  on("reset-dd", () => act({action: "reset_drawdown"}));
  on("halt-sym", () => sym() ? act({action: "halt", symbol: sym(), note: why()}) : say(false, "type a symbol first"));
  on("resume-sym", () => sym() ? act({action: "resume", symbol: sym()}) : say(false, "type a symbol first"));
  on("kill", () => { $("killbox").hidden = false; $("killword").value = ""; $("killword").focus(); });
  on("kill-cancel", () => { $("killbox").hidden = true; });
  on("kill-confirm", () => {
    if ($("killword").value !== "KILL") { say(false, "type KILL (capitals) to confirm the kill switch"); return; }
    $("killbox").hidden = true;
    act({action: "kill", confirm: "KILL", note: why()});
  });
  setInterval(() => { for (const s of document.querySelectorAll(".countdown")) tick(s); }, 250);
  connect();
})();
"""
