// FlowFabric dashboard: live updates over server-sent events. No framework, no build step.
"use strict";

// The lanes table: the server re-renders its rows and sends them as `lanes` events.
function liveLanes(table) {
  const status = document.getElementById("live-status");
  const source = new EventSource(table.dataset.live);
  source.addEventListener("lanes", (e) => {
    document.getElementById("lane-rows").innerHTML = e.data;
    if (status) status.classList.remove("off");
  });
  source.onerror = () => { if (status) status.classList.add("off"); };
}

// The frame tail: one `frame` event per frame (JSON), then `end` once the attempt's stream closes.
function tailFrames(table) {
  const rows = document.getElementById("frame-rows");
  const status = document.getElementById("tail-status");
  const source = new EventSource(table.dataset.tail);
  source.addEventListener("frame", (e) => {
    const f = JSON.parse(e.data);
    const tr = document.createElement("tr");
    tr.className = "frame fresh";
    tr.dataset.seq = f.seq;
    for (const [text, cls] of [[f.seq, "num"], [f.kind, ""], [f.frame_type, ""], [f.appended_at, "mono"], [f.text, "content"]]) {
      const td = document.createElement("td");
      td.textContent = String(text);
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    rows.appendChild(tr);
  });
  const stop = (label) => (e) => {
    source.close();
    if (status) { status.textContent = label + (e.data ? ": " + e.data : ""); status.classList.add("off"); }
  };
  source.addEventListener("end", stop("ended"));
  source.addEventListener("failed", stop("failed"));
}

// Forms that change something drastic ask first (`data-confirm`); no inline handlers, so the
// page's Content-Security-Policy can forbid inline script.
function confirmForms() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (e) => {
      if (!window.confirm(form.dataset.confirm)) e.preventDefault();
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  confirmForms();
  const lanes = document.querySelector("table[data-live]");
  if (lanes) liveLanes(lanes);
  const frames = document.querySelector("table[data-tail]");
  if (frames) tailFrames(frames);
});
