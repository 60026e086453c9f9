// The join page (/join/<code>): join the circle with the contributor key in this browser, or make an identity
// first (as the contribute page does: the key is shown once and kept here), then point to My circles. The code
// is read from this page's own address and sent only to the API's join endpoint: never logged, never put in
// another link (the page also sends no Referer).
"use strict";
(function () {
  const L = () => window.LuckRig;
  const c = (name, vars) => window.LuckRig.t("circles." + name, vars);

  function code() { return decodeURIComponent(window.location.pathname.split("/")[2] || ""); }

  async function join(root) {
    const state = root.querySelector("[data-my-state]");
    const go = root.querySelector("[data-join-go]");
    go.disabled = true;
    state.textContent = c("joining");
    const r = await L().postJSON("/api/circles/invites/" + encodeURIComponent(code()) + "/join", { schema_version: 1 }, L().contributorKey());
    if (r.status === 201) state.textContent = c("joined", { name: r.data.circle.name });
    else state.textContent = L().explain(r.status, r.data, r.headers);
    // Joined, or in it already: nothing more to do here. Otherwise the button stays for another try, unless the
    // link itself is dead.
    const over = r.status === 201 || (r.data && r.data.code === "already_member");
    root.querySelector("[data-join-ready]").hidden = over || r.status === 410 || r.status === 404;
    root.querySelector("[data-join-done]").hidden = !over;
    go.disabled = false;
  }

  async function ready(root) {
    const mine = await L().me.load(root, c("join_checking"));
    root.querySelector("[data-join-ready]").hidden = !mine;
    if (mine) root.querySelector("[data-my-state]").textContent = c("join_as", { who: mine.me.contributor.handle || mine.me.contributor.id });
    return mine;
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.querySelector("[data-join]");
    if (!root) return;
    root.querySelector("[data-join-go]").addEventListener("click", () => join(root));
    L().me.bindUseKey(root.querySelector("[data-use-key]"), () => ready(root));
    root.querySelector("[data-use-key]").hidden = false;
    root.querySelector("[data-join-create]").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const r = await L().me.create(ev.target.elements.handle.value.trim());
      if (r.status !== 201) { root.querySelector("[data-my-state]").textContent = L().explain(r.status, r.data, r.headers); return; }
      const box = root.querySelector("[data-new-key]");
      box.querySelector("[data-key-value]").textContent = r.data.contributor_key;
      box.hidden = false;
      if (await ready(root)) await join(root);
    });
    ready(root);
  });
})();
