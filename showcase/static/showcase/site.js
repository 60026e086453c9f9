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

  // A tracker or agent error as a sentence. Tracker errors are {error, code}; agent errors {error: {message, code}}.
  function explain(status, data, headers) {
    let code = "", msg = "";
    if (data && typeof data.error === "object" && data.error) { code = data.error.code || data.error.type || ""; msg = data.error.message || ""; }
    else if (data) { code = data.code || ""; msg = data.error || ""; }
    const retry = (headers && headers.get && headers.get("Retry-After")) || (data && data.retry_after_sec) || "?";
    const known = strings_has("errors." + code);
    if (known) {
      const ban = (data && data.ban) || {};
      return t("errors." + code, { msg, retry, reason: ban.reason || "", until: ban.expires_at || "∞" });
    }
    return t("errors.unknown", { code: code || status, msg: msg || "" });
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

  document.addEventListener("click", async (ev) => {
    const button = ev.target.closest("[data-copy]");
    if (!button) return;
    const scope = button.parentElement;
    const source = scope && (scope.querySelector("[data-copy-source]") || (scope.previousElementSibling && scope.previousElementSibling.querySelector("[data-copy-source]")));
    const fallback = button.previousElementSibling && button.previousElementSibling.matches("pre") ? button.previousElementSibling : null;
    const text = (source || fallback || {}).textContent || "";
    const label = button.textContent;
    try { await navigator.clipboard.writeText(text.trim()); button.textContent = t("copied"); }
    catch (e) { button.textContent = t("copy_failed"); }
    setTimeout(() => { button.textContent = label; }, 1500);
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

  window.LuckRig = { t, contributorKey, saveContributorKey, forgetContributorKey, postJSON, sendJSON, explain, fillList };
})();
