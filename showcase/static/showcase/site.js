// LuckRig site helpers shared by every page: translated strings, copy buttons, the language switch, the
// contributor key kept in this browser, and the fingerprint check. No framework, no build step.
"use strict";
(function () {
  const KEY_STORE = "luckrig.contributor_key";
  let strings = null;

  function t(name, vars) {
    if (strings === null) {
      const node = document.getElementById("lr-strings");
      strings = node ? JSON.parse(node.textContent) : {};
    }
    let text = name.split(".").reduce((o, k) => (o && o[k] !== undefined ? o[k] : undefined), strings);
    if (text === undefined) text = name;
    return String(text).replace(/%\((\w+)\)[sd]/g, (_, k) => (vars && vars[k] !== undefined ? String(vars[k]) : ""));
  }

  function contributorKey() {
    try { return window.localStorage.getItem(KEY_STORE); } catch (e) { return null; }
  }
  function saveContributorKey(key) { window.localStorage.setItem(KEY_STORE, key); }
  function forgetContributorKey() { window.localStorage.removeItem(KEY_STORE); }

  // A JSON request to the tracker → {status, data, headers} (data null when the body is not JSON).
  async function sendJSON(method, url, body, bearer) {
    const headers = { "Content-Type": "application/json", "Accept": "application/json" };
    if (bearer) headers["Authorization"] = "Bearer " + bearer;
    const resp = await fetch(url, { method, headers, body: JSON.stringify(body) });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    return { status: resp.status, data, headers: resp.headers };
  }
  const postJSON = (url, body, bearer) => sendJSON("POST", url, body, bearer);

  // A tracker or agent error as a sentence. Tracker errors are {error, code, ...}; agent errors {error: {message,
  // code, ...}}. A 429 says when it lifts (Retry-After, else retry_after_sec; resets_at as a local time) and, below
  // the contributor tier, what would earn more (docs/api.md, "Rate limits and quotas").
  function explain(status, data, headers) {
    let code = "", msg = "";
    const fields = data && typeof data.error === "object" && data.error ? data.error : data || {};
    if (data && typeof data.error === "object" && data.error) { code = data.error.code || data.error.type || ""; msg = data.error.message || ""; }
    else if (data) { code = data.code || ""; msg = data.error || ""; }
    const header = headers && headers.get && headers.get("Retry-After");
    const retry = header !== null && header !== undefined && header !== "" ? header : fields.retry_after_sec !== undefined ? fields.retry_after_sec : "?";
    const seconds = Number(retry);
    const resets = fields.resets_at ? new Date(fields.resets_at) : Number.isFinite(seconds) ? new Date(Date.now() + seconds * 1000) : null;
    const at = resets && !isNaN(resets) ? resets.toLocaleTimeString(document.documentElement.lang || undefined, { hour: "2-digit", minute: "2-digit" }) : "?";
    const wait = Number.isFinite(seconds) ? waitText(seconds) : "?";
    const known = strings_has("errors." + code);
    if (known) {
      const ban = (data && data.ban) || {};
      const limits = fields.limits || {};  // a circle's daily limits (circle_limit_reached)
      let text = t("errors." + code, {
        msg, retry, wait, at, reason: ban.reason || "", until: ban.expires_at || "∞",
        requests_per_day: limits.requests_per_day, tokens_per_day: limits.tokens_per_day,
      });
      if (status === 429 && EARNED_MORE.includes(code) && fields.tier !== "contributor") text += " " + t("earn_more");
      return text;
    }
    return t("errors.unknown", { code: code || status, msg: msg || "" });
  }
  // The refusals a higher tier lifts or shortens (a per-address rate is the same for every tier).
  const EARNED_MORE = ["quota_exceeded", "token_exhausted", "queue_full"];
  function waitText(seconds) {
    if (seconds < 1) return t("wait_now");
    if (seconds < 90) return t("wait_s", { s: Math.round(seconds) });
    const minutes = Math.ceil(seconds / 60);
    if (minutes < 60) return t("wait_min", { m: minutes });
    return t("wait_h_min", { h: Math.floor(minutes / 60), m: minutes % 60 });
  }
  function strings_has(name) { return t(name) !== name; }

  // Fills a <dl> with [label, value] pairs (as text: never HTML).
  function fillList(dl, rows) {
    dl.replaceChildren();
    for (const [label, value] of rows) {
      const div = document.createElement("div");
      const dt = document.createElement("dt"); dt.textContent = label;
      const dd = document.createElement("dd"); dd.textContent = value;
      div.append(dt, dd); dl.append(div);
    }
  }

  function flash(el, text) { if (el) el.textContent = text; }

  // A button that acts on its second press only (removing, leaving, deleting, publishing): the first press says
  // on the button what the second does, and the button forgets it after 5 s. `act` may be async.
  function twoPress(button, confirmText, act) {
    button.addEventListener("click", async () => {
      if (!button.dataset.armed) {
        button.dataset.armed = "1";
        button.dataset.label = button.textContent;
        button.textContent = typeof confirmText === "function" ? confirmText() : confirmText;
        button.armTimer = setTimeout(() => disarm(button), 5000);
        return;
      }
      disarm(button);
      button.disabled = true;
      try { await act(); } finally { button.disabled = false; }
    });
  }
  function disarm(button) {
    clearTimeout(button.armTimer);
    if (!button.dataset.armed) return;
    delete button.dataset.armed;
    button.textContent = button.dataset.label;
  }

  // Selects an element's text, so that the visitor can copy it by hand; true when something is selected.
  function selectText(el) {
    const selection = window.getSelection && window.getSelection();
    if (!el || !selection) return false;
    const range = document.createRange();
    range.selectNodeContents(el);
    selection.removeAllRanges();
    selection.addRange(range);
    return selection.toString().length > 0;
  }

  // Copy buttons: the [data-copy-source] beside the button. The Clipboard API exists only on https (and
  // localhost) pages and may be refused; then the text is selected and copied the old way, or left selected
  // with a word on how to copy it by hand. A [data-copy-status] region in the same section says the outcome in
  // full (to screen readers too), and the button a short word.
  document.addEventListener("click", async (ev) => {
    const button = ev.target.closest("[data-copy]");
    if (!button) return;
    const scope = button.parentElement;
    const source = scope && (scope.querySelector("[data-copy-source]") || (scope.previousElementSibling && scope.previousElementSibling.querySelector("[data-copy-source]")));
    const fallback = button.previousElementSibling && button.previousElementSibling.matches("pre") ? button.previousElementSibling : null;
    const from = source || fallback;
    const text = ((from || {}).textContent || "").trim();
    const section = button.closest("section");
    const status = section ? section.querySelector("[data-copy-status]") : null;
    if (button.dataset.copyLabel === undefined) button.dataset.copyLabel = button.textContent;
    let short, full;
    try {
      if (!navigator.clipboard || !navigator.clipboard.writeText) throw new Error("no Clipboard API");
      await navigator.clipboard.writeText(text);
      short = full = t("copied");
    } catch (e) {
      let copied = false;
      const selected = selectText(from);
      if (selected) { try { copied = document.execCommand("copy"); } catch (e2) { copied = false; } }
      if (copied) short = full = t("copied");
      else if (selected) { short = t("selected"); full = t("copy_selected"); }
      else short = full = t("copy_failed");
    }
    button.textContent = status ? short : full;
    if (status) status.textContent = full;
    clearTimeout(button.copyTimer);
    button.copyTimer = setTimeout(() => { button.textContent = button.dataset.copyLabel; if (status) status.textContent = ""; }, 4000);
  });

  // Folded on phones, open on wider screens: <details data-open-wide> (the home page's filters).
  function unfoldWide() {
    if (!window.matchMedia("(min-width: 48rem)").matches) return;
    document.querySelectorAll("details[data-open-wide]").forEach((d) => { d.open = true; });
  }

  document.addEventListener("DOMContentLoaded", () => {
    unfoldWide();
    const select = document.querySelector("select[data-autosubmit]");
    if (select) {
      const button = select.form.querySelector("button[type=submit]");
      if (button) button.hidden = true;
      select.addEventListener("change", () => select.form.submit());
    }
    document.querySelectorAll("[data-verify-fp]").forEach((button) => {
      button.addEventListener("click", async () => {
        const out = button.parentElement.querySelector("[data-verify-result]");
        button.disabled = true;
        try {
          const r = await postJSON("/api/fingerprint/verify", { node_id: button.dataset.verifyFp });
          if (r.status === 200 && r.data) flash(out, r.data.ok ? t("verify_ok") : t("verify_bad") + " (" + (r.data.found || "—") + ")");
          else flash(out, t("verify_error", { msg: explain(r.status, r.data, r.headers) }));
        } catch (e) { flash(out, t("verify_error", { msg: String(e) })); }
        button.disabled = false;
      });
    });
  });

  window.LuckRig = { t, contributorKey, saveContributorKey, forgetContributorKey, postJSON, sendJSON, explain, fillList, waitText, twoPress, disarm };
})();
