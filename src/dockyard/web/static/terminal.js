// The web terminal: xterm.js tabs on the reconnecting PTY WebSocket (GET /api/v2/workspaces/{id}/pty).
// Each tab is its own terminal id; the agent keeps a detached terminal (and its last 64 KiB of output) for
// five minutes, so reopening a tab, reloading the page or losing the network brings the same shell back.
// The ids live in localStorage per workspace, which is how a closed or reloaded tab finds its session again.
"use strict";

(() => {
  const root = document.getElementById("terminals");
  if (!root) return;
  const workspace = root.dataset.workspace;
  const storageKey = "dockyard.terminals." + workspace;
  const DETACHED_FOR_MS = 5 * 60 * 1000;
  const encoder = new TextEncoder();
  const tabsBox = document.getElementById("term-tabs");
  const stage = document.getElementById("term");
  const stateLine = document.getElementById("term-state");
  const detachedList = document.getElementById("term-detached");
  const tabs = new Map();
  let active = null;

  function load() {
    try {
      const saved = JSON.parse(localStorage.getItem(storageKey) || "{}");
      return { open: saved.open || [], detached: saved.detached || [], active: saved.active || null };
    } catch {
      return { open: [], detached: [], active: null };
    }
  }
  function save() {
    const saved = load();
    const now = Date.now();
    const detached = saved.detached.filter((d) => !tabs.has(d.id) && now - d.closedAt < DETACHED_FOR_MS);
    localStorage.setItem(storageKey, JSON.stringify({ open: [...tabs.keys()], detached, active: active && active.id }));
    renderDetached(detached);
  }
  function newId() {
    const bytes = new Uint8Array(8);
    crypto.getRandomValues(bytes);
    return "t" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  function socketUrl(id, term) {
    const url = new URL(root.dataset.url, window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("reconnect", id);
    url.searchParams.set("width", String(term.cols));
    url.searchParams.set("height", String(term.rows));
    return url.toString();
  }

  function setState(text) {
    stateLine.textContent = text;
  }

  function connect(tab) {
    if (tab.closed) return;
    const ws = new WebSocket(socketUrl(tab.id, tab.term));
    ws.binaryType = "arraybuffer";
    tab.ws = ws;
    ws.onopen = () => {
      tab.retry = 0;
      tab.button.dataset.state = "connected";
      if (tab === active) setState("connected: " + tab.id);
      // The agent replays the scrollback on attach: start from a clean screen so it is not shown twice.
      tab.term.reset();
    };
    ws.onmessage = (event) => {
      if (typeof event.data === "string") {
        const message = JSON.parse(event.data);
        if (message.type === "exit") {
          tab.ended = true;
          tab.term.write("\r\n[session ended, exit code " + message.exit_code + "]\r\n");
        }
        return;
      }
      tab.term.write(new Uint8Array(event.data));
    };
    ws.onclose = (event) => {
      tab.button.dataset.state = "disconnected";
      if (tab.closed || tab.ended) return;
      if (tab === active) setState("disconnected (" + (event.reason || event.code) + "); reconnecting…");
      tab.retry = Math.min((tab.retry || 0) + 1, 6);
      setTimeout(() => connect(tab), 500 * tab.retry);
    };
  }

  function send(tab, data) {
    if (tab.ws && tab.ws.readyState === WebSocket.OPEN) tab.ws.send(encoder.encode(data));
  }

  function open(id) {
    if (tabs.has(id)) {
      activate(tabs.get(id));
      return;
    }
    const pane = document.createElement("div");
    pane.className = "term-pane";
    pane.hidden = true;
    stage.append(pane);
    const term = new Terminal({ cursorBlink: true, scrollback: 5000, convertEol: false,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", monospace' });
    const fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(pane);
    const button = document.createElement("span");
    button.className = "tab";
    button.innerHTML = '<button type="button" role="tab" class="tab-name"></button>' +
      '<button type="button" class="tab-close" aria-label="Close tab">×</button>';
    button.querySelector(".tab-name").textContent = id;
    button.dataset.session = id;
    tabsBox.append(button);
    const tab = { id, term, fit, pane, button, ws: null, closed: false, ended: false, retry: 0 };
    tabs.set(id, tab);
    button.querySelector(".tab-name").addEventListener("click", () => activate(tab));
    button.querySelector(".tab-close").addEventListener("click", () => close(tab));
    term.onData((data) => send(tab, data));
    term.onBinary((data) => {
      if (tab.ws && tab.ws.readyState === WebSocket.OPEN) tab.ws.send(Uint8Array.from(data, (c) => c.charCodeAt(0)));
    });
    term.onResize(({ cols, rows }) => {
      if (tab.ws && tab.ws.readyState === WebSocket.OPEN) {
        tab.ws.send(JSON.stringify({ type: "resize", width: cols, height: rows }));
      }
    });
    term.attachCustomKeyEventHandler((event) => {
      // Ctrl+Shift+C / Ctrl+Shift+V copy and paste, as in desktop terminals; plain Ctrl+C stays an interrupt.
      if (event.type !== "keydown" || !event.ctrlKey || !event.shiftKey) return true;
      if (event.code === "KeyC") {
        copy();
        return false;
      }
      if (event.code === "KeyV") {
        paste();
        return false;
      }
      return true;
    });
    activate(tab);
    connect(tab);
  }

  function activate(tab) {
    for (const other of tabs.values()) {
      other.pane.hidden = other !== tab;
      other.button.querySelector(".tab-name").setAttribute("aria-selected", String(other === tab));
      other.button.classList.toggle("active", other === tab);
    }
    active = tab;
    tab.fit.fit();
    tab.term.focus();
    setState(tab.ws && tab.ws.readyState === WebSocket.OPEN ? "connected: " + tab.id : "connecting…");
    const url = new URL(window.location.href);
    url.searchParams.set("session", tab.id);
    history.replaceState(null, "", url);
    save();
  }

  function close(tab) {
    tab.closed = true;
    if (tab.ws) tab.ws.close(1000, "tab closed");
    tab.term.dispose();
    tab.pane.remove();
    tab.button.remove();
    tabs.delete(tab.id);
    const saved = load();
    if (!tab.ended) saved.detached.push({ id: tab.id, closedAt: Date.now() });
    localStorage.setItem(storageKey, JSON.stringify({ ...saved, detached: saved.detached }));
    active = null;
    const next = [...tabs.values()].pop();
    if (next) activate(next);
    else {
      setState("no open tab");
      save();
    }
  }

  function renderDetached(detached) {
    detachedList.replaceChildren();
    for (const d of detached) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "Reopen " + d.id;
      button.dataset.session = d.id;
      button.addEventListener("click", () => open(d.id));
      li.append(button, " ", new Date(d.closedAt).toLocaleTimeString());
      detachedList.append(li);
    }
    if (!detached.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "None.";
      detachedList.append(li);
    }
  }

  async function copy() {
    if (!active) return;
    const text = active.term.getSelection();
    if (!text) return;
    try {
      await navigator.clipboard.writeText(text);
      setState("copied " + text.length + " characters");
    } catch {
      setState("the browser refused clipboard access; use the context menu");
    }
  }
  async function paste() {
    if (!active) return;
    try {
      active.term.paste(await navigator.clipboard.readText());
    } catch {
      setState("the browser refused clipboard access; use Ctrl+V");
    }
  }

  document.getElementById("term-new").addEventListener("click", () => open(newId()));
  document.getElementById("term-copy").addEventListener("click", copy);
  document.getElementById("term-paste").addEventListener("click", paste);
  window.addEventListener("resize", () => active && active.fit.fit());

  const saved = load();
  const wanted = root.dataset.initial || new URL(window.location.href).searchParams.get("session");
  const ids = saved.open.length ? saved.open : [];
  if (wanted && /^[A-Za-z0-9_-]{1,40}$/.test(wanted) && !ids.includes(wanted)) ids.push(wanted);
  if (!ids.length) ids.push(newId());
  for (const id of ids) open(id);
  const first = tabs.get(wanted) || tabs.get(saved.active);
  if (first) activate(first);
  // Tests and scripts read the open sessions here.
  window.dockyardTerminals = tabs;
})();
