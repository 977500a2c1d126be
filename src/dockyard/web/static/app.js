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

// A refresh of part of the page that never loses the latest change. htmx drops a request while another from
// the same source is in flight (hx-sync's default), and the one in flight may have been rendered before the
// change that asked for this one: ask once more when it is done.
function refresher(url, options) {
  let inFlight = false;
  let stale = false;
  const refresh = () => {
    if (inFlight) {
      stale = true;
      return;
    }
    inFlight = true;
    stale = false;
    htmx.ajax("GET", url, options).finally(() => {
      inFlight = false;
      if (stale) refresh();
    });
  };
  return refresh;
}

function watchList(table) {
  const state = document.getElementById("live-state");
  const refreshRows = refresher(window.location.href, { target: "#rows", select: "#rows", swap: "outerHTML" });
  listen(table.dataset.events, (row) => {
    const tr = document.getElementById("ws-" + row.id);
    if (!tr) {
      // A workspace created since the page loaded: fetch the rows again rather than render one here.
      if (row.status !== "deleted") refreshRows();
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

// Follows one build's log; a new build (a start after a stop) replaces it.
// The agent's startup script writes to the start build's log as stage "startup_script"; its own box shows those.
function followLog(pre, buildId) {
  if (pre.followed) pre.followed.close();
  const startup = document.getElementById("startup-log");
  if (startup) startup.textContent = "";
  pre.dataset.build = buildId;
  pre.dataset.state = "following";
  pre.textContent = "";
  let lastId = 0;
  const open = () => {
    const source = new EventSource(
      "/api/v2/workspacebuilds/" + encodeURIComponent(buildId) + "/logs?follow=true&after=" + lastId);
    pre.followed = source;
    source.addEventListener("log", (event) => {
      const line = JSON.parse(event.data);
      lastId = line.id;
      pre.append(document.createTextNode("[" + line.stage + "] " + line.output.replace(/\n$/, "") + "\n"));
      pre.scrollTop = pre.scrollHeight;
      if (startup && line.stage === "startup_script") {
        startup.append(document.createTextNode(line.output.replace(/\n$/, "") + "\n"));
        startup.scrollTop = startup.scrollHeight;
      }
    });
    source.addEventListener("end", () => {
      source.close();
      pre.dataset.state = "ended";
    });
    source.onerror = () => {
      // EventSource would reconnect from the start; reopen after the last line instead.
      source.close();
      if (pre.followed === source) setTimeout(open, 2000);
    };
  };
  open();
}

function watchWorkspace(box) {
  const pre = document.getElementById("build-log");
  if (pre) followLog(pre, pre.dataset.build);
  const refreshDetail = refresher(box.dataset.detail, { target: "#detail", swap: "outerHTML" });
  listen(box.dataset.watch, (workspace, source) => {
    refreshDetail();
    if (pre && workspace.latest_build.id !== pre.dataset.build) followLog(pre, workspace.latest_build.id);
    if (workspace.status === "deleted") source.close();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.querySelector("table[data-events]");
  if (table) watchList(table);
  const box = document.querySelector("[data-watch]");
  if (box) watchWorkspace(box);
});
