// The dashboard's own script: confirmations, copy buttons, and live updates over server-sent events.
// No inline handlers: the pages' Content-Security-Policy allows scripts from this origin only.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
    button.textContent = "Copied";
  } catch {
    // Without clipboard access (plain http on another host) the text stays selected for Ctrl+C.
    button.textContent = "Press Ctrl+C";
  }
});

function listen(url, onWorkspace) {
  const source = new EventSource(url);
  source.addEventListener("workspace", (event) => onWorkspace(JSON.parse(event.data), source));
  return source;
}

function watchList(table) {
  const state = document.getElementById("live-state");
  listen(table.dataset.events, (row) => {
    const tr = document.getElementById("ws-" + row.id);
    if (!tr) {
      // A workspace created since the page loaded: fetch the rows again rather than render one here.
      if (row.status !== "deleted") {
        htmx.ajax("GET", window.location.href, { target: "#rows", select: "#rows", swap: "outerHTML" });
      }
      return;
    }
    const status = tr.querySelector('[data-field="status"]');
    status.textContent = row.status;
    status.className = "status status-" + row.status;
    tr.querySelector('[data-field="status_reason"]').textContent = row.status_reason;
    if (row.build) tr.querySelector('[data-field="build"]').textContent = row.build;
    if (state) state.dataset.live = "true";
  });
}

function watchWorkspace(box) {
  listen(box.dataset.watch, (workspace, source) => {
    htmx.ajax("GET", box.dataset.detail, { target: "#detail", swap: "outerHTML" });
    if (workspace.status === "deleted") source.close();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.querySelector("table[data-events]");
  if (table) watchList(table);
  const box = document.querySelector("[data-watch]");
  if (box) watchWorkspace(box);
});
