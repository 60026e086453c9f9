// "My rigs": the rigs this browser's contributor key owns (GET /api/contributors/me), each with a form that changes
// it through PATCH /api/nodes/<id>, as `luckrig-node edit` does. Only the fields that differ are sent; the
// tracker's refusal is shown beside the field it names. The key stays in this browser (contribute.js: LuckRig.me).
// A circle rig is not made public or unlisted by Save (the tracker refuses that PATCH with publish_required):
// choosing either shows what it means and a button of its own, POST /api/nodes/<id>/publish, pressed twice.
"use strict";
(function () {
  const L = () => window.LuckRig;
  const t = (...a) => window.LuckRig.t(...a);
  const NUMBERS = new Set(["vram_gb", "context_length"]);
  const NOTES = new Set(["tuning_note", "availability_note"]); // the tracker keeps their whitespace

  // What the form says for one field, in the API's shape; `undefined` for a number field the browser cannot read.
  function formValue(form, name) {
    const el = form.elements[name];
    if (name === "tags") {
      return [...new Set(el.value.split(",").map((s) => s.trim().toLowerCase()).filter(Boolean))];
    }
    if (NUMBERS.has(name)) {
      if (el.validity.badInput) return undefined;
      return el.value.trim() === "" ? null : Number(el.value);
    }
    return NOTES.has(name) ? el.value : el.value.trim();
  }

  function same(a, b) { return JSON.stringify(a === undefined ? null : a) === JSON.stringify(b === undefined ? null : b); }

  function shown(name, value) {
    if (value === null || value === undefined || value === "" || (Array.isArray(value) && !value.length)) return t("my_none_value");
    const text = Array.isArray(value) ? value.join(", ") : String(value);
    return text.length > 40 ? text.slice(0, 39) + "…" : text;
  }

  function fill(form, node) {
    for (const el of form.querySelectorAll("input, select, textarea")) {
      const value = node[el.name];
      el.value = Array.isArray(value) ? value.join(", ") : value === null || value === undefined ? "" : String(value);
    }
  }

  // `name` may come from the server (a refusal's `field`): escaped, so that no value breaks the selector.
  function fieldBox(form, name) { return form.querySelector(`[data-field="${CSS.escape(String(name))}"]`); }

  function setError(form, name, text) {
    const box = fieldBox(form, name);
    if (!box) return false;
    const control = box.querySelector("input, select, textarea");
    const error = box.querySelector("[data-error]");
    error.textContent = text || "";
    error.hidden = !text;
    if (text) control.setAttribute("aria-invalid", "true"); else control.removeAttribute("aria-invalid");
    return true;
  }

  function clearErrors(form) { form.querySelectorAll("[data-field]").forEach((box) => setError(form, box.dataset.field, "")); }

  function showHead(card, node) {
    const link = card.querySelector("[data-rig-link]");
    link.href = "/nodes/" + encodeURIComponent(node.id) + "/";
    link.textContent = node.display_name || node.id;
    const status = (node.health && node.health.status) || "unknown";
    const pill = card.querySelector("[data-rig-status]");
    pill.className = "pill status-" + status;
    pill.textContent = t("status_" + status);
    card.querySelector("[data-rig-id]").textContent = node.id;
  }

  // One card per rig, from the <template>; ids are unique per rig so that every label names its field.
  function rigCard(node, index) {
    const card = document.querySelector("[data-rig-template]").content.firstElementChild.cloneNode(true);
    card.dataset.nodeId = node.id;
    const form = card.querySelector("[data-rig-form]");
    for (const box of form.querySelectorAll("[data-field]")) {
      const id = `rig-${index}-${box.dataset.field}`;
      const control = box.querySelector("input, select, textarea");
      control.id = id;
      box.querySelector("label").htmlFor = id;
      const error = box.querySelector("[data-error]");
      error.id = id + "-error";
      const hint = box.querySelector(".field-hint");
      if (hint) hint.id = id + "-hint";
      control.setAttribute("aria-describedby", [hint ? hint.id : "", error.id].filter(Boolean).join(" "));
    }
    let current = node;
    showHead(card, current);
    fill(form, current);
    const publish = bindPublish(card, form, () => current, (node) => { current = node; showHead(card, current); });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const result = card.querySelector("[data-rig-result]");
      clearErrors(form);
      const changes = {};
      for (const box of form.querySelectorAll("[data-field]")) {
        const name = box.dataset.field;
        const value = formValue(form, name);
        if (value === undefined) { setError(form, name, t("my_bad_number")); result.textContent = t("my_fix"); return; }
        if (!same(value, current[name])) changes[name] = value;
      }
      if (current.visibility === "circle" && changes.visibility !== undefined) {
        setError(form, "visibility", t("my_publish_first"));
        result.textContent = t("my_fix");
        return;
      }
      if (!Object.keys(changes).length) { result.textContent = t("my_unchanged"); return; }
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      result.textContent = t("my_saving");
      try {
        const r = await L().sendJSON("PATCH", "/api/nodes/" + encodeURIComponent(current.id), changes, L().contributorKey());
        if (r.status === 200 && r.data && r.data.node) {
          const before = current;
          current = r.data.node;
          showHead(card, current);
          fill(form, current);
          publish.show();
          const lines = Object.keys(changes)
            .filter((name) => !same(before[name], current[name]))
            .map((name) => `${fieldBox(form, name).querySelector("label").textContent}: ${shown(name, before[name])} → ${shown(name, current[name])}`);
          result.textContent = lines.length ? t("my_saved", { changes: lines.join("; ") }) : t("my_unchanged");
        } else if (r.status === 400 && r.data && r.data.field && fieldBox(form, r.data.field)) {
          const field = r.data.field;
          const error = String(r.data.error || ""), prefix = field + ": ";
          const msg = error.startsWith(prefix) ? error.slice(prefix.length) : error;  // no RegExp from server text
          setError(form, field, msg);
          fieldBox(form, field).querySelector("input, select, textarea").focus();
          result.textContent = t("my_fix");
        } else {
          result.textContent = L().explain(r.status, r.data, r.headers);
        }
      } catch (e) {
        result.textContent = t("my_network_error");
      } finally {
        button.disabled = false;
      }
    });
    return card;
  }

  // The publish box of a circle rig: shown while its visibility select says public or unlisted. The first press
  // says on the button what the second does; the second publishes, and only the visibility changes in the form
  // (other edits not yet saved stay as they are).
  function bindPublish(card, form, getCurrent, setCurrent) {
    const box = card.querySelector("[data-publish-box]");
    const button = box.querySelector("[data-publish-rig]");
    const select = form.elements.visibility;
    const wanted = () => select.value;
    function show() {
      L().disarm(button);
      box.hidden = !(getCurrent().visibility === "circle" && select.value !== "circle");
      if (box.hidden) return;
      box.querySelector("[data-publish-said]").textContent = t(`my_publish.${wanted()}.said`);
      button.textContent = t(`my_publish.${wanted()}.button`);
    }
    select.addEventListener("change", () => { setError(form, "visibility", ""); show(); });
    L().twoPress(button, () => t(`my_publish.${wanted()}.confirm`), async () => {
      const result = card.querySelector("[data-rig-result]");
      const visibility = wanted();
      const node = getCurrent();
      let r;
      try {
        r = await L().sendJSON("POST", `/api/nodes/${encodeURIComponent(node.id)}/publish`, { schema_version: 1, visibility }, L().contributorKey());
      } catch (e) { result.textContent = t("my_network_error"); return; }
      if (r.status !== 200 || !r.data || !r.data.node) { result.textContent = L().explain(r.status, r.data, r.headers); return; }
      setCurrent(r.data.node);
      select.value = r.data.node.visibility;
      show();
      result.textContent = t(`my_publish.${visibility}.done`);
    });
    show();
    return { show };
  }

  async function showRigs(root) {
    const state = root.querySelector("[data-my-state]");
    const list = root.querySelector("[data-rigs]");
    list.replaceChildren();
    const mine = await L().me.load(root, t("my_loading"));
    if (!mine) return;
    const data = mine.me;
    const nodes = data.nodes || [];
    const who = data.contributor.handle || data.contributor.id;
    state.textContent = nodes.length ? t("my_count", { n: nodes.length, who }) : t("my_none", { who });
    nodes.forEach((node, index) => list.append(rigCard(node, index)));
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.querySelector("[data-my-rigs]");
    if (!root) return;
    L().me.bindUseKey(root.querySelector("[data-use-key]"), () => showRigs(root));
    root.querySelector("[data-use-key]").hidden = false;
    showRigs(root);
  });
})();
