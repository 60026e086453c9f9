// "Contribute": create a contributor identity in one click (the key is shown once and kept in this browser's
// localStorage), or use an existing key, then show my score per axis, my rigs and my tier.
// Also shared with the pages that act with this browser's key (My rigs, My circles, the join page; loaded after
// this file): LuckRig.me.fetchMe, bindUseKey, load and create.
"use strict";
(function () {
  const L = () => window.LuckRig;
  const t = (...a) => window.LuckRig.t(...a);

  // Who this browser's key is: GET /api/contributors/me → {status, data, headers}.
  function fetchMe(key) { return L().sendJSON("GET", "/api/contributors/me", undefined, key); }

  // The "use a key you already have" form (templates/showcase/_use_key_form.html): keep the key, then `after()`.
  function bindUseKey(form, after) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const key = form.elements.key.value.trim();
      if (!key) return;
      L().saveContributorKey(key);
      form.reset();
      await after();
    });
  }

  // The key's pages start the same way: no key, or one the tracker does not know, shows the "no key" panel
  // (templates/showcase/_no_key.html) and says why in the state line. → {key, me: GET /api/contributors/me} or null.
  async function load(root, loading) {
    const state = root.querySelector("[data-my-state]");
    const noKey = root.querySelector("[data-no-key]");
    const key = L().contributorKey();
    noKey.hidden = Boolean(key);
    if (!key) { state.textContent = t("no_key"); return null; }
    state.textContent = loading;
    const { status, data, headers } = await fetchMe(key);
    if (status !== 200) { state.textContent = L().explain(status, data, headers); noKey.hidden = false; return null; }
    return { key, me: data };
  }

  // A new contributor identity (POST /api/contributors), its key kept in this browser → {status, data, headers}.
  async function create(handle) {
    const r = await L().postJSON("/api/contributors", handle ? { handle } : {});
    if (r.status === 201) L().saveContributorKey(r.data.contributor_key);
    return r;
  }

  window.LuckRig.me = { fetchMe, bindUseKey, load, create };

  async function showMe(root) {
    const key = L().contributorKey();
    const state = root.querySelector("[data-key-state]");
    const view = root.querySelector("[data-me-view]");
    root.querySelector("[data-create]").hidden = Boolean(key);
    root.querySelector("[data-use-key]").hidden = Boolean(key);
    view.hidden = true;
    if (!key) { state.textContent = t("no_key"); return; }
    const { status, data, headers } = await fetchMe(key);
    if (status !== 200) { state.textContent = L().explain(status, data, headers); root.querySelector("[data-use-key]").hidden = false; return; }
    state.textContent = t("key_saved");
    root.querySelector("[data-me-handle]").textContent = data.contributor.handle || "";
    root.querySelector("[data-me-id]").textContent = data.contributor.id;
    root.querySelector("[data-me-total]").textContent = Number(data.score.total).toFixed(2);
    root.querySelector("[data-me-tier]").textContent = data.score.tier;
    const tiers = JSON.parse(document.getElementById("lr-tiers").textContent);
    const mine = tiers[data.score.tier];
    root.querySelector("[data-me-unlocks]").textContent = mine
      ? t("unlocks", { requests: mine.max_requests, tokens: mine.max_output_tokens_total, per_day: mine.tokens_per_day })
      : "";
    const axes = root.querySelector("[data-me-axes]");
    axes.replaceChildren();
    for (const [name, value] of Object.entries(data.score.components || {})) {
      const tr = document.createElement("tr");
      const th = document.createElement("th"); th.scope = "row"; th.textContent = name;
      const td = document.createElement("td"); td.textContent = typeof value === "number" ? value.toFixed(2) : JSON.stringify(value);
      tr.append(th, td); axes.append(tr);
    }
    const nodes = root.querySelector("[data-me-nodes]");
    nodes.replaceChildren();
    for (const n of data.nodes || []) {
      const li = document.createElement("li");
      const a = document.createElement("a"); a.href = "/nodes/" + encodeURIComponent(n.id) + "/"; a.textContent = n.display_name || n.id;
      li.append(a); nodes.append(li);
    }
    view.hidden = false;
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.querySelector("[data-me]");
    if (!root) return;
    root.querySelector("[data-create]").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const handle = ev.target.elements.handle.value.trim();
      const r = await create(handle);
      if (r.status !== 201) { root.querySelector("[data-key-state]").textContent = L().explain(r.status, r.data, r.headers); return; }
      const box = root.querySelector("[data-new-key]");
      box.querySelector("[data-new-key-label]").textContent = t("key_created");
      box.querySelector("[data-key-value]").textContent = r.data.contributor_key;
      box.hidden = false;
      await showMe(root);
    });
    bindUseKey(root.querySelector("[data-use-key]"), () => showMe(root));
    root.querySelector("[data-forget]").addEventListener("click", async () => {
      L().forgetContributorKey();
      root.querySelector("[data-new-key]").hidden = true;
      await showMe(root);
      root.querySelector("[data-key-state]").textContent = t("key_forgotten");
    });
    showMe(root);
  });
})();
