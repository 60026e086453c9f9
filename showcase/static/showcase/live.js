// Live queue updates over the tracker's websockets: one rig's queue on its page (/ws/queue/<id>/), every
// rig's on the list and the queue map (/ws/queue/). Reconnects with backoff; says when updates are stale.
"use strict";
(function () {
  const t = (...a) => window.LuckRig.t(...a);

  function queueLine(m) {
    if (!m.max_active) return t("queue_none");
    return t("queue_line", { active: m.active, max: m.max_active, waiting: m.waiting });
  }

  function apply(m) {
    const single = document.querySelector("[data-queue-node]");
    if (single && single.dataset.queueNode === m.node_id) {
      setPill(document.querySelector("main h1") || document, m);
      single.querySelector("[data-queue-line]").textContent = queueLine(m);
      const eta = single.querySelector("[data-queue-eta]");
      if (eta) eta.textContent = m.eta_sec === null || m.eta_sec === undefined ? "" : m.eta_sec === 0 ? t("eta_none") : t("eta", { s: m.eta_sec });
      const list = single.querySelector("[data-queue-entries]");
      list.replaceChildren();
      if (!m.entries || !m.entries.length) {
        const li = document.createElement("li"); li.className = "muted"; li.textContent = t("queue_empty"); list.append(li);
      }
      for (const e of m.entries || []) {
        const li = document.createElement("li");
        li.className = "entry-" + e.state;
        li.textContent = e.ticket + " · " + (e.state === "generating" ? t("generating") : t("waiting") + ", " + t("position", { n: e.position }));
        list.append(li);
      }
    }
    document.querySelectorAll('[data-node="' + CSS.escape(m.node_id) + '"]').forEach((el) => {
      const line = el.querySelector("[data-queue-line]");
      if (line) line.textContent = queueLine(m);
      setPill(el, m);
      const cells = { "[data-active]": m.active, "[data-waiting]": m.waiting, "[data-max]": m.max_active };
      for (const [sel, v] of Object.entries(cells)) { const c = el.querySelector(sel); if (c) c.textContent = v; }
      const load = el.querySelector("[data-load]");
      if (load) setFill(load, el.querySelector("[data-fill-text]"), m);
    });
  }

  // The queue map's meter, coloured by fullness as present.fill_levels sets it: green up to half the slots,
  // amber above, red when every slot generates; and the same in words.
  function setFill(load, text, m) {
    const top = Math.max(1, m.max_active || 0);
    load.max = top; load.low = top / 2; load.high = top - 0.5; load.value = m.active;
    load.hidden = !m.max_active;
    if (!text) return;
    if (!m.max_active) { text.textContent = t("fill_none"); return; }
    text.textContent = t("fill", { active: m.active, max: m.max_active }) + (m.active >= m.max_active ? " · " + t("fill_full") : "");
  }

  // The pill follows the tracker's status (its liveness rules: a relayed rig whose tunnel drops turns
  // unavailable at once); a serving rig is busy while every slot generates, available otherwise.
  const STATUSES = ["available", "busy", "unavailable", "unknown"];
  function setPill(root, m) {
    root.querySelectorAll("[data-status]").forEach((pill) => {
      const was = STATUSES.find((s) => pill.classList.contains("status-" + s));
      if (!was) return;
      let now = STATUSES.includes(m.status) ? m.status : was;
      if ((now === "available" || now === "busy") && m.max_active) now = m.active >= m.max_active ? "busy" : "available";
      if (now === was) return;
      pill.classList.replace("status-" + was, "status-" + now);
      pill.textContent = t("status_" + now);
    });
  }

  function setState(text) { document.querySelectorAll("[data-live-state]").forEach((el) => { el.textContent = text; }); }

  function connect(path, attempt) {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    let ws;
    try { ws = new WebSocket(scheme + location.host + path); } catch (e) { return; }
    ws.addEventListener("open", () => { attempt = 0; setState(t("live")); });
    ws.addEventListener("message", (ev) => {
      let m; try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m.type === "queue") apply(m);
      else if (m.type === "status") setState(m.stale ? t("stale") : t("live"));
    });
    ws.addEventListener("close", (ev) => {
      if (ev.code === 4404) { setState(""); return; }  // the rig is gone: nothing to wait for
      setState(t("stale"));
      const delay = Math.min(30000, 1000 * 2 ** attempt) * (0.5 + Math.random() / 2);
      setTimeout(() => connect(path, attempt + 1), delay);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const single = document.querySelector("[data-queue-node]");
    connect(single ? "/ws/queue/" + encodeURIComponent(single.dataset.queueNode) + "/" : "/ws/queue/", 0);
  });
})();
