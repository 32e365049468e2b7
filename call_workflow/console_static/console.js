// Switchboard operator console: plain DOM, no build step. Every value from the server is set with textContent
// (never innerHTML), so nothing a caller says can become markup. docs/console.md describes the endpoints.
"use strict";
(function () {
  const KEY = "switchboard.functionKey";
  const POLL_MS = 1000;  // the issue asks for changes within 2 s
  const $ = (id) => document.getElementById(id);
  const state = { config: null, view: "live", me: null, openCall: null, profiles: {}, live: [], cursors: [null], page: 0,
                  next: null, timers: [] };

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function say(text) { $("status").textContent = text || ""; }

  // ------------------------------------------------------------------------------------ Entra sign-in
  // In Azure (CONSOLE_AUTH=entra) the page signs the user in itself: OAuth 2.0 authorization code with PKCE
  // (RFC 7636) against Microsoft Entra ID, for a single-page-application redirect URI; the access token stays in
  // this tab's sessionStorage and goes out as "Authorization: Bearer". The app validates it (docs/console.md).
  const TOKEN = "switchboard.entraToken";
  const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const redirectUri = () => location.origin + location.pathname;

  async function entraSignIn() {
    const cfg = state.config;
    const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
    const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
    const nonce = b64url(crypto.getRandomValues(new Uint8Array(16)));
    sessionStorage.setItem("switchboard.pkce", JSON.stringify({ verifier, nonce }));
    const q = new URLSearchParams({ client_id: cfg.client_id, response_type: "code", redirect_uri: redirectUri(),
      scope: cfg.scope + " openid profile", code_challenge: challenge, code_challenge_method: "S256", state: nonce });
    location.assign(cfg.authority + "/" + cfg.tenant_id + "/oauth2/v2.0/authorize?" + q.toString());
  }

  async function entraRedeem() {
    const q = new URLSearchParams(location.search);
    const pkce = JSON.parse(sessionStorage.getItem("switchboard.pkce") || "null");
    history.replaceState(null, "", redirectUri());  // the code leaves the address bar at once
    sessionStorage.removeItem("switchboard.pkce");
    if (!q.get("code") || !pkce || q.get("state") !== pkce.nonce) return;
    const cfg = state.config;
    const response = await fetch(cfg.authority + "/" + cfg.tenant_id + "/oauth2/v2.0/token", { method: "POST",
      body: new URLSearchParams({ client_id: cfg.client_id, grant_type: "authorization_code", code: q.get("code"),
        redirect_uri: redirectUri(), code_verifier: pkce.verifier, scope: cfg.scope }) });
    const body = await response.json();
    if (response.ok && body.access_token) sessionStorage.setItem(TOKEN, body.access_token);
    else say("Sign-in failed: " + (body.error_description || body.error || response.status));
  }

  async function api(path, options) {
    const headers = Object.assign({ "Accept": "application/json" }, (options && options.headers) || {});
    const key = sessionStorage.getItem(KEY);
    if (key) headers["x-functions-key"] = key;
    const token = sessionStorage.getItem(TOKEN);
    if (token) headers["Authorization"] = "Bearer " + token;
    const response = await fetch("console/" + path, Object.assign({}, options, { headers, credentials: "same-origin" }));
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (response.status === 401) { signedOut(); throw new Error("not signed in"); }
    if (!response.ok) throw new Error((body && body.error) || ("HTTP " + response.status));
    return body;
  }

  function signedOut() {
    state.me = null;
    stopPolling();
    document.querySelectorAll(".view").forEach((v) => { v.hidden = true; });
    // Nothing stays on screen once auth is gone.
    ["#live-table tbody", "#history-table tbody", "#transcript", "#timeline", "#record-transcript"].forEach((s) => {
      const node = document.querySelector(s); if (node) node.replaceChildren();
    });
    $("call").hidden = true; $("record").hidden = true;
    sessionStorage.removeItem(TOKEN);
    const entra = state.config && state.config.auth === "entra";
    $("keyform").hidden = entra; $("entra").hidden = !entra; $("keyhelp").hidden = entra;
    $("signin").hidden = false; $("who").textContent = ""; $("signout").hidden = true;
    (entra ? $("entra-signin") : $("key")).focus();
  }

  async function signIn() {
    try {
      state.me = await api("me");
    } catch (e) {
      if (state.me === null && $("signin").hidden === false) say(sessionStorage.getItem(KEY) ? "That key was refused." : "");
      if (sessionStorage.getItem(KEY)) sessionStorage.removeItem(KEY);
      return;
    }
    $("signin").hidden = true;
    $("who").textContent = "Signed in: " + state.me.user + (state.me.can_act ? " (operator)" : " (view only)");
    $("signout").hidden = false;
    $("signout").textContent = state.me.auth === "key" ? "Forget key" : "Sign out";
    $("hangup").disabled = !state.me.can_act; $("transfer").disabled = !state.me.can_act;
    say("");
    show(state.view);
  }

  function stopPolling() { state.timers.forEach(clearInterval); state.timers = []; }

  function show(view) {
    state.view = view;
    document.querySelectorAll(".tab").forEach((t) => t.setAttribute("aria-pressed", String(t.dataset.view === view)));
    if (!state.me) return;
    document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== "view-" + view; });
    stopPolling();
    if (view === "live") { refreshLive(); state.timers.push(setInterval(refreshLive, POLL_MS)); }
    if (view === "history") search(0);
    if (view === "charts") charts();
  }

  // ------------------------------------------------------------------------------------------- live
  function duration(startedAt) {
    if (!startedAt) return "";
    const s = Math.max(0, Math.floor((Date.now() - Date.parse(startedAt)) / 1000));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  async function refreshLive() {
    let data;
    try { data = await api("live"); } catch (e) { if (state.me) say("Live calls: " + e.message); return; }
    state.live = data.calls; state.profiles = data.profiles || {};
    const body = document.querySelector("#live-table tbody");
    const rows = data.calls.map((c) => {
      const tr = el("tr"); tr.dataset.callId = c.call_id;
      tr.append(el("td", c.caller || "—"), el("td", c.dialed || "—"), el("td", c.profile || "—"),
                el("td", duration(c.started_at || c.created_at), "num"), el("td", c.state));
      const turns = el("td", null, "turns");
      (c.last_turns || []).forEach((t) => { const p = el("p"); p.append(el("b", t.role + ": "), el("span", t.text)); turns.append(p); });
      const open = el("button", "Open"); open.type = "button";
      open.setAttribute("aria-label", "Open call from " + (c.caller || "unknown caller"));
      open.addEventListener("click", () => openCall(c.call_id));
      const td = el("td"); td.append(open);
      tr.append(turns, td);
      return tr;
    });
    body.replaceChildren(...rows);
    $("live-count").textContent = "(" + data.calls.length + ")";
    $("live-empty").hidden = data.calls.length > 0;
    if (state.openCall) {
      const call = data.calls.find((c) => c.call_id === state.openCall);
      renderCallMeta(call);
      refreshTranscript();
    }
  }

  function renderCallMeta(call) {
    if (!call) { $("call-meta").textContent = "This call has ended."; $("hangup").disabled = true; $("transfer").disabled = true; return; }
    $("call-meta").textContent = call.caller + " → " + call.dialed + " · " + (call.profile || "") + " · " + call.state +
      " · " + duration(call.started_at || call.created_at);
    const select = $("target");
    const targets = state.profiles[call.profile] || [];
    if (select.dataset.profile !== call.profile) {
      select.replaceChildren(...targets.map((t) => { const o = el("option", t); o.value = t; return o; }));
      select.dataset.profile = call.profile;
    }
    const can = state.me && state.me.can_act;
    $("hangup").disabled = !can; $("transfer").disabled = !can || targets.length === 0; select.disabled = targets.length === 0;
  }

  function openCall(id) {
    state.openCall = id;
    $("call").hidden = false; $("transcript").replaceChildren(); $("target").dataset.profile = "";
    renderCallMeta(state.live.find((c) => c.call_id === id));
    refreshTranscript();
    $("call-h").focus();
  }

  async function refreshTranscript() {
    const id = state.openCall; if (!id) return;
    let data;
    try { data = await api("calls/" + encodeURIComponent(id) + "/transcript"); } catch (e) { return; }
    if (state.openCall !== id) return;
    renderTurns($("transcript"), data.turns);
  }

  function renderTurns(list, turns) {
    list.replaceChildren(...(turns || []).map((t) => {
      const li = el("li", null, "turn " + t.role); li.append(el("b", t.role + ": "), el("span", t.text));
      if (t.at) li.append(el("time", " " + t.at.slice(11, 19))); return li;
    }));
  }

  async function act(kind) {
    const id = state.openCall; if (!id) return;
    const call = state.live.find((c) => c.call_id === id);
    const who = call ? call.caller : "this call";
    let options = { method: "POST" };
    if (kind === "transfer") {
      const target = $("target").value;
      if (!target || !window.confirm("Transfer the call from " + who + " to " + target + "?")) return;
      options = { method: "POST", body: JSON.stringify({ target }), headers: { "Content-Type": "application/json" } };
    } else if (!window.confirm("Hang up the call from " + who + "?")) {
      return;
    }
    try {
      await api("calls/" + encodeURIComponent(id) + "/" + kind, options);
      say(kind === "hangup" ? "Hang-up requested." : "Transfer requested.");
    } catch (e) { say("Could not " + (kind === "hangup" ? "hang up" : "transfer") + ": " + e.message); }
  }

  // ---------------------------------------------------------------------------------------- history
  function filterParams(form) {
    const params = new URLSearchParams();
    new FormData(form).forEach((v, k) => { if (String(v).trim()) params.set(k, String(v).trim()); });
    return params;
  }

  async function search(page) {
    const params = filterParams($("filters"));
    const cursor = state.cursors[page];
    if (cursor) params.set("cursor", cursor);
    let data;
    try { data = await api("history?" + params.toString()); } catch (e) { say("History: " + e.message); return; }
    say("");
    state.page = page; state.next = data.next;
    state.cursors[page + 1] = data.next;
    const body = document.querySelector("#history-table tbody");
    body.replaceChildren(...data.calls.map((c) => {
      const tr = el("tr"); tr.dataset.callId = c.call_id;
      tr.append(el("td", (c.started_at || "").replace("T", " ").slice(0, 19)), el("td", c.caller || "—"),
                el("td", c.dialed || "—"), el("td", c.profile_name || "—"), el("td", c.outcome),
                el("td", c.ended_by), el("td", c.duration_seconds == null ? "—" : Math.round(c.duration_seconds) + " s", "num"));
      const open = el("button", "Open"); open.type = "button";
      open.setAttribute("aria-label", "Open record of call from " + (c.caller || "unknown caller") + " at " + c.started_at);
      open.addEventListener("click", () => openRecord(c.day, c.call_id));
      const td = el("td"); td.append(open); tr.append(td);
      return tr;
    }));
    $("history-empty").hidden = data.calls.length > 0;
    $("prev").disabled = page === 0; $("next").disabled = !data.next;
    $("page").textContent = "Page " + (page + 1) + " · " + data.from + " to " + data.to;
    if (!$("f-from").value) $("f-from").value = data.from;
    if (!$("f-to").value) $("f-to").value = data.to;
  }

  function timeline(r) {
    const items = [];
    const add = (at, label) => items.push({ at: at || "", label });
    if (r.ended_by === "routing") {
      add(r.ended_at, "Ringing; routing decided: " + r.outcome + (r.sip_status ? " (SIP " + r.sip_status + ")" : "") + ", " + r.reason);
    } else {
      add(r.accepted_at, "Ringing, accepted with profile " + (r.profile_name || "?"));
      if (r.greeting_ms != null && r.accepted_at) {
        add(new Date(Date.parse(r.accepted_at) + r.greeting_ms).toISOString(), "Greeting started (" + r.greeting_ms + " ms after accept)");
      }
      (r.transcript || []).forEach((t) => add(t.at, "Turn · " + t.role + ": " + (t.text || "").slice(0, 120)));
      (r.tools || []).forEach((t) => add(t.at, "Tool " + t.name + (t.ok ? " ok" : " failed") + (t.latency_ms != null ? " · " + t.latency_ms + " ms" : "")));
      if (r.digits) add(null, "Digits pressed: " + r.digits);
      if (r.transfer_target) add(null, "Transferred to " + r.transfer_target);
      add(r.ended_at, "Ended by " + r.ended_by + " · " + r.outcome + (r.reason ? " · " + r.reason : "") +
          (r.hangup_confirmed === true ? " (hang-up confirmed)" : ""));
    }
    const dated = items.filter((i) => i.at).sort((a, b) => a.at.localeCompare(b.at));
    const end = dated.pop();
    return dated.concat(items.filter((i) => !i.at), end ? [end] : []);
  }

  async function openRecord(day, id) {
    let r;
    try { r = await api("history/" + encodeURIComponent(day) + "/" + encodeURIComponent(id)); } catch (e) { say("Record: " + e.message); return; }
    $("record").hidden = false;
    $("record-meta").textContent = (r.caller || "—") + " → " + (r.dialed || "—") + " · " + (r.profile_name || "no profile") +
      " · " + r.outcome + (r.duration_seconds != null ? " · " + Math.round(r.duration_seconds) + " s" : "");
    $("timeline").replaceChildren(...timeline(r).map((i) => {
      const li = el("li"); if (i.at) li.append(el("time", i.at.replace("T", " ").slice(0, 23) + " ")); li.append(el("span", i.label)); return li;
    }));
    renderTurns($("record-transcript"), r.transcript);
    const analysis = r.analysis;
    $("analysis").hidden = !analysis;
    const body = $("analysis-body"); body.replaceChildren();
    if (analysis && typeof analysis === "object") {
      const dl = el("dl");
      Object.entries(analysis).forEach(([k, v]) => dl.append(el("dt", k), el("dd", typeof v === "object" ? JSON.stringify(v) : v)));
      body.append(dl);
    } else if (analysis) { body.append(el("p", analysis)); }
    $("record-h").focus();
  }

  // ----------------------------------------------------------------------------------------- charts
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = { completed: "#1b6e3a", caller_hung_up: "#2757a3", agent_ended: "#5b3fa0", transferred: "#8a5a00",
                   timed_out: "#a33a27", idle: "#555", failed: "#b00020", rejected: "#7a2b5e", referred: "#00687a" };
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function chart(label, width, height) {
    const s = svg("svg", { viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": label, width: "100%" });
    s.append(svg("title", {}, label)); return s;
  }

  function barsByHour(perHour) {
    const W = 720, H = 240, L = 40, B = 40;
    const max = Math.max(1, ...perHour.map((h) => Object.values(h.outcomes).reduce((a, b) => a + b, 0)));
    const summary = perHour.map((h) => h.hour.slice(5, 16) + ": " + Object.entries(h.outcomes).map(([o, n]) => n + " " + o).join(", ")).join("; ");
    const s = chart("Calls per hour by outcome. " + (summary || "No calls."), W, H);
    const bw = perHour.length ? Math.max(2, Math.min(40, (W - L - 10) / perHour.length - 2)) : 0;
    s.append(svg("line", { x1: L, y1: H - B, x2: W - 5, y2: H - B, stroke: "#333" }));
    s.append(svg("text", { x: L - 6, y: 14, "text-anchor": "end", "font-size": 11 }, max));
    perHour.forEach((h, i) => {
      let y = H - B; const x = L + 4 + i * (bw + 2);
      Object.entries(h.outcomes).forEach(([o, n]) => {
        const hgt = (H - B - 10) * n / max; y -= hgt;
        const r = svg("rect", { x, y, width: bw, height: hgt, fill: COLORS[o] || "#444" });
        r.append(svg("title", {}, h.hour + " " + o + ": " + n)); s.append(r);
      });
      if (perHour.length <= 24 || i % Math.ceil(perHour.length / 24) === 0) {
        s.append(svg("text", { x: x + bw / 2, y: H - B + 14, "text-anchor": "middle", "font-size": 10 }, h.hour.slice(11, 13)));
      }
    });
    const outcomes = [...new Set(perHour.flatMap((h) => Object.keys(h.outcomes)))];
    outcomes.forEach((o, i) => {
      s.append(svg("rect", { x: L + i * 110, y: H - 14, width: 10, height: 10, fill: COLORS[o] || "#444" }));
      s.append(svg("text", { x: L + 14 + i * 110, y: H - 5, "font-size": 11 }, o));
    });
    return s;
  }

  function hbars(label, items, color) {
    const W = 720, row = 24, L = 200, H = Math.max(1, items.length) * row + 10;
    const max = Math.max(1, ...items.map((i) => i.n));
    const s = chart(label + ". " + items.map((i) => i.label + ": " + i.n).join("; "), W, H);
    items.forEach((it, k) => {
      const y = 5 + k * row;
      s.append(svg("text", { x: L - 8, y: y + 15, "text-anchor": "end", "font-size": 12 }, it.label));
      s.append(svg("rect", { x: L, y: y + 3, width: Math.max(it.n ? 2 : 0, (W - L - 60) * it.n / max), height: row - 8, fill: color }));
      s.append(svg("text", { x: L + 6 + (W - L - 60) * it.n / max, y: y + 15, "font-size": 12 }, it.n));
    });
    return s;
  }

  async function charts() {
    const params = filterParams($("chart-filters"));
    let d;
    try { d = await api("stats?" + params.toString()); } catch (e) { say("Charts: " + e.message); return; }
    say("");
    if (!$("c-from").value) $("c-from").value = d.from;
    if (!$("c-to").value) $("c-to").value = d.to;
    $("chart-total").textContent = d.calls + " calls from " + d.from + " to " + d.to + (d.truncated ? " (only the first " + d.calls + " are counted)" : "");
    $("chart-hour").replaceChildren(barsByHour(d.per_hour));
    $("chart-greet").replaceChildren(hbars("Greeting latency in milliseconds", d.greeting_ms.map((b) => ({ label: b.bucket + " ms", n: b.calls })), "#2757a3"));
    $("chart-reasons").replaceChildren(hbars("Top end reasons", d.end_reasons.map((r) => ({ label: r.reason, n: r.calls })), "#8a5a00"));
  }

  // ------------------------------------------------------------------------------------------ wiring
  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => show(t.dataset.view)));
    $("keyform").addEventListener("submit", (e) => {
      e.preventDefault(); sessionStorage.setItem(KEY, $("key").value.trim()); $("key").value = ""; signIn();
    });
    $("signout").addEventListener("click", () => { sessionStorage.removeItem(KEY); sessionStorage.removeItem(TOKEN); signedOut(); });
    $("hangup").addEventListener("click", () => act("hangup"));
    $("transfer").addEventListener("click", () => act("transfer"));
    $("close-call").addEventListener("click", () => { state.openCall = null; $("call").hidden = true; });
    $("close-record").addEventListener("click", () => { $("record").hidden = true; });
    $("filters").addEventListener("submit", (e) => { e.preventDefault(); state.cursors = [null]; search(0); });
    $("next").addEventListener("click", () => search(state.page + 1));
    $("prev").addEventListener("click", () => search(Math.max(0, state.page - 1)));
    $("chart-filters").addEventListener("submit", (e) => { e.preventDefault(); charts(); });
    $("entra-signin").addEventListener("click", () => entraSignIn());
    ["call-h", "record-h"].forEach((id) => $(id).setAttribute("tabindex", "-1"));
    fetch("console/config").then((r) => r.json()).then(async (cfg) => {
      state.config = cfg;
      if (cfg.auth === "entra" && new URLSearchParams(location.search).has("code")) await entraRedeem();
      signIn();
    }).catch(() => say("The console could not load its configuration."));
  });
})();
