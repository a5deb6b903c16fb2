// The console's own behaviour, loaded as a file (the CSP allows no inline script): copy buttons.
"use strict";

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  const status = document.getElementById("copy-status");
  field.select();
  const done = () => { if (status) status.textContent = "Copied to the clipboard."; };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(field.value).then(done, () => { document.execCommand("copy"); done(); });
  } else {
    document.execCommand("copy");
    done();
  }
});

// Forms that undo something ask first (data-confirm); without script they submit at once.
document.addEventListener("submit", (event) => {
  const message = event.target.dataset && event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

// Live mode of the traces page: the tail WebSocket with the page's filters; each new record is prepended to the
// table, built with textContent (a record's text is never parsed as HTML).
let liveSocket = null;

function stopLive() {
  if (liveSocket) { liveSocket.close(); liveSocket = null; }
}

function cell(row, text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function when(ts) { return new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19); }
function ms(v) { return v === null || v === undefined ? "—" : `${v.toLocaleString("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 })} ms`; }
function usd(v) { return v === null || v === undefined ? "—" : `$${v < 0.01 ? v.toFixed(6) : v.toFixed(4)}`; }

function traceRow(r, admin) {
  const row = document.createElement("tr");
  row.className = "fresh";
  cell(row, when(r.ts));
  if (admin) cell(row, r.project);
  const model = cell(row, r.model_requested);
  if (r.model_served && r.model_served !== r.model_requested) {
    const served = document.createElement("span");
    served.className = "muted";
    served.textContent = ` → ${r.model_served}`;
    model.appendChild(served);
  }
  cell(row, r.provider || "—");
  const status = cell(row, "");
  const badge = document.createElement("span");
  badge.className = `status s${Math.floor(r.status / 100)}xx`;
  badge.textContent = String(r.status);
  status.appendChild(badge);
  cell(row, ms(r.latency_ms), "num");
  cell(row, (r.total_tokens || 0).toLocaleString("en-US"), "num");
  cell(row, usd(r.cost_usd), "num");
  cell(row, r.key_name || r.key_id || "—");
  const link = document.createElement("a");
  link.href = `/ui/traces/${encodeURIComponent(r.id)}`;
  link.textContent = `${r.id.slice(0, 12)}…`;
  cell(row, "").appendChild(link);
  return row;
}

document.addEventListener("change", (event) => {
  if (event.target.id !== "live") return;
  const state = document.getElementById("live-state");
  stopLive();
  if (!event.target.checked) { state.textContent = ""; return; }
  const query = event.target.closest("[data-live-query]").dataset.liveQuery;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ui/traces/tail?${query}`);
  socket.binaryType = "arraybuffer";  // the tail sends its JSON as binary frames
  liveSocket = socket;
  state.textContent = "connecting…";
  socket.addEventListener("open", () => { state.textContent = "live"; state.dataset.state = "open"; });
  socket.addEventListener("close", () => {
    if (liveSocket === socket) { state.textContent = "disconnected"; state.dataset.state = "closed"; liveSocket = null; }
  });
  socket.addEventListener("message", (message) => {
    const text = typeof message.data === "string" ? message.data : new TextDecoder().decode(message.data);
    const event = JSON.parse(text);
    if (event.type === "error") { state.textContent = event.error.message; return; }
    if (event.type !== "trace") return;
    const body = document.getElementById("trace-rows");
    const admin = document.getElementById("traces").dataset.admin === "yes";
    body.querySelectorAll("tr.empty").forEach((row) => row.remove());
    body.prepend(traceRow(event.data, admin));
  });
});

// A filter applied through htmx replaces the table: the old tail's filters no longer hold.
document.addEventListener("htmx:beforeSwap", stopLive);
