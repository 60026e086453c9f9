// "My circles": the circles this browser's contributor key owns or belongs to (GET /api/circles), each with the
// rigs shared with it (a Taste button opens the page's one tasting panel on that rig, asking for a token through
// the circle), its members with today's usage against their limits (numbers only: the API has no prompts to
// give), and for its owner and inviters the invites. Every change goes to the API under /api/circles (or
// PATCH /api/nodes/<id> for sharing a rig) with the key, which stays in this browser (contribute.js: LuckRig.me).
// Everything the server or the members wrote is put in as text, never as HTML; the invite's QR code, an SVG the
// tracker draws, is shown as an <img> from a data: URL, where no script in it can run.
"use strict";
(function () {
  const L = () => window.LuckRig;
  const t = (...a) => window.LuckRig.t(...a);
  const c = (name, vars) => t("circles." + name, vars);
  const enc = encodeURIComponent;
  const api = (method, path, body) => L().sendJSON(method, path, body, L().contributorKey());
  const lang = () => document.documentElement.lang || undefined;
  const num = (n) => Number(n).toLocaleString(lang());
  const who = (person) => person.handle || person.id;
  const localTime = (iso) => new Date(iso).toLocaleString(lang(), { dateStyle: "medium", timeStyle: "short" });
  const MANAGERS = new Set(["owner", "inviter"]);

  let me = null;     // GET /api/contributors/me: who this key is, and its rigs (to share)
  let taste = null;  // the tasting panel (taste.js), set up on the first Taste press
  let tasting = null; // {card, circle} the panel is pointed at

  function clone(selector) { return document.querySelector(selector).content.firstElementChild.cloneNode(true); }

  // Labels in a cloned template name their controls ([data-for] → [data-name]) under ids unique on the page.
  function labelAll(root, prefix) {
    root.querySelectorAll("label[data-for]").forEach((label) => {
      const control = root.querySelector(`[data-name="${label.dataset.for}"]`);
      control.id = prefix + "-" + label.dataset.for;
      label.htmlFor = control.id;
    });
  }

  function say(el, text) { el.textContent = text || ""; }
  function refusal(r) { return L().explain(r.status, r.data, r.headers); }

  function resetsText(resetsAt) {
    const when = new Date(resetsAt);
    const seconds = Math.max(0, (when.getTime() - Date.now()) / 1000);
    const at = when.toLocaleTimeString(lang(), { hour: "2-digit", minute: "2-digit" });
    return c("resets", { wait: L().waitText(seconds), at });
  }

  function rigTitle(node) { return node.display_name || [node.gpu, node.model_name].filter(Boolean).join(" · ") || node.id; }

  // --- rigs ---------------------------------------------------------------------------------------------------

  async function showRigs(card, circle) {
    const list = card.querySelector("[data-circle-rigs]");
    const r = await api("GET", "/api/circles/" + enc(circle.id));
    list.replaceChildren();
    if (r.status !== 200) { say(card.querySelector("[data-share-result]"), refusal(r)); return; }
    Object.assign(circle, r.data.circle);
    showMeta(card, circle);
    const nodes = r.data.nodes || [];
    if (!nodes.length) {
      const li = document.createElement("li"); li.className = "muted"; li.textContent = c("rigs_none"); list.append(li);
    }
    for (const node of nodes) list.append(rigItem(card, circle, node));
    fillShare(card, circle, nodes);
  }

  function rigItem(card, circle, node) {
    const li = clone("[data-rig-template]");
    li.dataset.nodeId = node.id;
    const title = rigTitle(node);
    li.querySelector("[data-rig-title]").textContent = title;
    li.querySelector("[data-rig-badge]").textContent = c("badge", { name: circle.name });
    const status = (node.health && node.health.status) || "unknown";
    const pill = li.querySelector("[data-rig-status]");
    pill.className = "pill status-" + status;
    pill.textContent = t("status_" + status);
    li.querySelector("[data-rig-spec]").textContent = [node.model_name, node.quantization, node.gpu].filter(Boolean).join(" · ");
    const button = li.querySelector("[data-taste-rig]");
    const note = li.querySelector("[data-rig-note]");
    const serving = (status === "available" || status === "busy") && Boolean(node.endpoint_url);
    if (circle.my_status === "paused") { button.disabled = true; note.textContent = c("paused_note"); }
    else if (!serving) { button.disabled = true; note.textContent = c("not_serving"); }
    button.addEventListener("click", () => openTaste(card, circle, node, title));
    const unshare = li.querySelector("[data-unshare]");
    if (node.owner && me && node.owner.id === me.contributor.id) {
      unshare.hidden = false;
      unshare.addEventListener("click", () => share(card, circle, node.id, title, false));
    }
    return li;
  }

  function openTaste(card, circle, node, title) {
    const panel = document.querySelector("[data-circle-taste]");
    const config = {
      ...JSON.parse(document.getElementById("lr-taste-caps").textContent),
      node_id: node.id,
      endpoint_url: node.endpoint_url,
      reachability: node.reachability,
      model_name: node.model_name,
      status: node.health.status,
      fingerprint: node.node_public_key ? node.node_public_key_fingerprint : null,
      circle_id: circle.id,
      visibility: node.visibility,
    };
    if (!taste) taste = window.LuckRigTaste.setup(panel, config, () => { if (tasting) showMembers(tasting.card, tasting.circle); });
    taste.use(config);
    tasting = { card, circle };
    panel.querySelector("[data-taste-title]").textContent = c("taste_title", { rig: title });
    card.querySelector("[data-circle-rigs]").after(panel);
    panel.hidden = false;
    panel.querySelector("textarea[name=prompt]").focus();
  }

  // The share form offers my rigs not yet shared with this circle (to an active member of it).
  function fillShare(card, circle, shared) {
    const form = card.querySelector("[data-share-form]");
    const select = form.querySelector("[data-share-select]");
    const ids = new Set(shared.map((n) => n.id));
    const left = ((me && me.nodes) || []).filter((n) => !ids.has(n.id));
    select.replaceChildren(...left.map((n) => {
      const option = document.createElement("option"); option.value = n.id; option.textContent = rigTitle(n); return option;
    }));
    form.hidden = circle.my_status !== "active" || !left.length;
    card.querySelector("[data-share-none]").hidden = circle.my_role !== "owner" || Boolean(left.length);
  }

  // Shares a rig with the circle (or stops): its circles as the tracker has them, plus or minus this one. "Friends
  // only" also makes it a circle rig; making one public again is a separate act (POST /api/nodes/<id>/publish).
  async function share(card, circle, nodeId, title, on) {
    const result = card.querySelector("[data-share-result]");
    const got = await api("GET", "/api/nodes/" + enc(nodeId));
    if (got.status !== 200) { say(result, refusal(got)); return; }
    const others = (got.data.node.circles || []).map((x) => x.id).filter((id) => id !== circle.id);
    const body = { circles: on ? others.concat([circle.id]) : others };
    if (on && card.querySelector("[data-friends-only]").checked) body.visibility = "circle";
    const r = await api("PATCH", "/api/nodes/" + enc(nodeId), body);
    if (r.status !== 200) { say(result, refusal(r)); return; }
    await showRigs(card, circle);
    say(result, c(on ? "shared" : "unshared", { rig: title, name: circle.name }));
  }

  // --- members ------------------------------------------------------------------------------------------------

  async function showMembers(card, circle) {
    const list = card.querySelector("[data-members]");
    const r = await api("GET", `/api/circles/${enc(circle.id)}/members`);
    if (r.status !== 200) { say(card.querySelector("[data-members-result]"), refusal(r)); return; }
    say(card.querySelector("[data-resets]"), resetsText(r.data.resets_at));
    const members = r.data.members || [];
    list.replaceChildren(...members.map((m, i) => memberItem(card, circle, m, i)));
    if (MANAGERS.has(circle.my_role)) { circle.members_count = members.length; showMeta(card, circle); }
  }

  function usageBar(li, kind, used, limit) {
    const meter = li.querySelector(`meter[data-usage="${kind}"]`);
    meter.max = Math.max(limit, 1);
    meter.value = Math.min(used, meter.max);
    meter.low = meter.max * 0.7; meter.high = meter.max * 0.9; meter.optimum = 0;
    const text = c(kind === "requests" ? "requests_today" : "tokens_today", { used: num(used), limit: num(limit) });
    li.querySelector(`[data-usage-text="${kind}"]`).textContent = text;
    meter.setAttribute("aria-label", text);
  }

  function memberItem(card, circle, m, index) {
    const li = clone("[data-member-template]");
    const name = who(m.contributor);
    li.dataset.contributorId = m.contributor.id;
    labelAll(li, `${card.dataset.prefix}-m${index}`);
    li.querySelector("[data-member-name]").textContent = name;
    li.querySelector("[data-member-role]").textContent = c("roles." + m.role);
    const status = li.querySelector("[data-member-status]");
    status.className = "pill " + (m.status === "active" ? "status-available" : "status-busy");
    status.textContent = c("statuses." + m.status);
    usageBar(li, "requests", m.usage_today.requests, m.limits.requests_per_day);
    usageBar(li, "tokens", m.usage_today.tokens, m.limits.tokens_per_day);
    say(li.querySelector("[data-limits-source]"), c(m.limits_source === "member" ? "limits_own" : "limits_circle"));
    if (circle.my_role !== "owner" || m.role === "owner") return li;

    const result = card.querySelector("[data-members-result]");
    const path = `/api/circles/${enc(circle.id)}/members/${enc(m.contributor.id)}`;
    const change = async (body, done) => {
      const r = await api("PATCH", path, { schema_version: 1, ...body });
      await showMembers(card, circle);
      say(result, r.status === 200 ? c(done, { who: name }) : refusal(r));
    };
    li.querySelector("[data-owner-actions]").hidden = false;
    const pause = li.querySelector("[data-pause]"), resume = li.querySelector("[data-resume]");
    pause.hidden = m.status !== "active"; resume.hidden = m.status === "active";
    pause.addEventListener("click", () => change({ status: "paused" }, "paused"));
    resume.addEventListener("click", () => change({ status: "active" }, "resumed"));
    L().twoPress(li.querySelector("[data-remove]"), c("confirm_remove"), async () => {
      const r = await api("DELETE", path);
      await showMembers(card, circle);
      say(result, r.status === 204 ? c("removed", { who: name }) : refusal(r));
    });
    const form = li.querySelector("[data-limits-form]");
    form.hidden = false;
    form.elements.requests_per_day.value = m.limits.requests_per_day;
    form.elements.tokens_per_day.value = m.limits.tokens_per_day;
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const limits = { requests_per_day: Number(form.elements.requests_per_day.value), tokens_per_day: Number(form.elements.tokens_per_day.value) };
      change({ limits }, "limits_saved");
    });
    const reset = form.querySelector("[data-limits-reset]");
    reset.hidden = m.limits_source !== "member";
    reset.addEventListener("click", () => change({ limits: null }, "limits_saved"));
    return li;
  }

  // --- invites ------------------------------------------------------------------------------------------------

  async function showInvites(card, circle) {
    const body = card.querySelector("[data-invites]");
    const r = await api("GET", `/api/circles/${enc(circle.id)}/invites`);
    if (r.status !== 200) { say(card.querySelector("[data-invites-result]"), refusal(r)); return; }
    const invites = r.data.invites || [];
    body.replaceChildren(...invites.map((invite) => inviteRow(card, circle, invite)));
    if (!invites.length) {
      const tr = document.createElement("tr"), td = document.createElement("td");
      td.colSpan = 6; td.className = "muted"; td.textContent = c("invites_none");
      tr.append(td); body.append(tr);
    }
  }

  function inviteRow(card, circle, invite) {
    const tr = document.createElement("tr");
    tr.dataset.inviteId = invite.id;
    tr.dataset.state = invite.state;
    const uses = invite.max_uses === null ? c("invite_uses_any", { uses: invite.uses }) : c("invite_uses", { uses: invite.uses, max: invite.max_uses });
    let joinsAs = c("roles." + invite.role);
    if (invite.limits) joinsAs += " · " + c("invite_limits", { requests: num(invite.limits.requests_per_day), tokens: num(invite.limits.tokens_per_day) });
    for (const text of [localTime(invite.created_at), joinsAs, uses, localTime(invite.expires_at), c("invite_states." + invite.state)]) {
      const td = document.createElement("td"); td.textContent = text; tr.append(td);
    }
    const cell = document.createElement("td");
    if (invite.state === "active") {
      const revoke = document.createElement("button");
      revoke.type = "button"; revoke.className = "btn-sm"; revoke.textContent = c("revoke"); revoke.dataset.revoke = "";
      revoke.addEventListener("click", async () => {
        revoke.disabled = true;
        const r = await api("DELETE", `/api/circles/${enc(circle.id)}/invites/${enc(invite.id)}`);
        await showInvites(card, circle);
        say(card.querySelector("[data-invites-result]"), r.status === 204 ? c("invite_revoked") : refusal(r));
      });
      cell.append(revoke);
    }
    tr.append(cell);
    return tr;
  }

  // The owner may give an invite limits of its own (the API takes both numbers or none: an empty one is the
  // circle's); an inviter invites on the circle's terms, so the two fields are the owner's only.
  function inviteLimits(form, circle) {
    const limits = {};
    let own = false;
    for (const field of ["requests_per_day", "tokens_per_day"]) {
      const value = form.elements[field].value.trim();
      own = own || value !== "";
      limits[field] = value === "" ? circle.default_limits[field] : Number(value);
    }
    return own ? limits : undefined;
  }

  function bindInvites(card, circle) {
    const form = card.querySelector("[data-invite-form]");
    const fresh = card.querySelector("[data-invite-new]");
    const owner = circle.my_role === "owner";
    form.querySelectorAll("[data-owner-only]").forEach((el) => { el.hidden = !owner; });
    if (owner) {
      form.elements.requests_per_day.placeholder = circle.default_limits.requests_per_day;
      form.elements.tokens_per_day.placeholder = circle.default_limits.tokens_per_day;
    }
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      const uses = form.elements.uses.value;
      const r = await api("POST", `/api/circles/${enc(circle.id)}/invites`, {
        schema_version: 1,
        max_uses: uses === "unlimited" ? null : Number(uses),
        expires_in_sec: Number(form.elements.days.value) * 86400,
        role: form.elements.role.value,
        limits: owner ? inviteLimits(form, circle) : undefined,
      });
      button.disabled = false;
      if (r.status !== 201) { fresh.hidden = true; say(card.querySelector("[data-invites-result]"), refusal(r)); return; }
      say(card.querySelector("[data-invites-result]"), "");
      say(fresh.querySelector("[data-invite-said]"), c("invite_made", { name: circle.name, when: localTime(r.data.invite.expires_at) }));
      say(fresh.querySelector("[data-invite-url]"), r.data.url);
      fresh.querySelector("[data-invite-qr]").src = "data:image/svg+xml;charset=utf-8," + enc(r.data.qr_svg);
      fresh.hidden = false;
      await showInvites(card, circle);
    });
  }

  // --- circles ------------------------------------------------------------------------------------------------

  function showMeta(card, circle) {
    say(card.querySelector("[data-circle-meta]"), c("meta", { owner: who(circle.owner), members: circle.members_count, rigs: circle.nodes_count }));
  }

  async function circleCard(root, circle, index) {
    const card = clone("[data-circle-template]");
    card.dataset.circleId = circle.id;
    card.dataset.prefix = "circle-" + index;
    labelAll(card, card.dataset.prefix);
    card.querySelector("[data-circle-name]").textContent = circle.name;
    card.querySelector("[data-circle-role]").textContent = c("roles." + circle.my_role);
    showMeta(card, circle);
    const shareForm = card.querySelector("[data-share-form]");
    shareForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const select = shareForm.elements.node;
      if (select.value) share(card, circle, select.value, select.selectedOptions[0].textContent, true);
    });
    const manages = MANAGERS.has(circle.my_role);
    card.querySelector("[data-invites-box]").hidden = !manages;
    if (manages) bindInvites(card, circle);
    if (circle.my_role === "owner") {
      card.querySelector("[data-delete-box]").hidden = false;
      L().twoPress(card.querySelector("[data-delete-circle]"), c("confirm_delete"), async () => {
        const r = await api("DELETE", "/api/circles/" + enc(circle.id));
        if (r.status !== 204) { say(card.querySelector("[data-delete-result]"), refusal(r)); return; }
        await showCircles(root);
        say(root.querySelector("[data-my-state]"), c("deleted", { name: circle.name }));
      });
    } else {
      card.querySelector("[data-leave-box]").hidden = false;
      L().twoPress(card.querySelector("[data-leave]"), c("confirm_leave"), async () => {
        const r = await api("DELETE", `/api/circles/${enc(circle.id)}/members/me`);
        if (r.status !== 204) { say(card.querySelector("[data-members-result]"), refusal(r)); return; }
        await showCircles(root);
        say(root.querySelector("[data-my-state]"), c("left", { name: circle.name }));
      });
    }
    await Promise.all([showRigs(card, circle), showMembers(card, circle), manages ? showInvites(card, circle) : null]);
    return card;
  }

  // Draws every circle again. Only the latest call draws: a circle created while the page was still loading
  // starts a second one, and two would leave every card twice (with the same ids, so half the labels unread).
  let drawing = 0;
  async function showCircles(root) {
    const mine = ++drawing;
    const panel = document.querySelector("[data-circle-taste]");
    panel.hidden = true;
    root.after(panel);  // out of the cards about to be redrawn
    tasting = null;
    const list = root.querySelector("[data-circles]");
    const create = root.querySelector("[data-circle-create]");
    list.replaceChildren();
    const got = await L().me.load(root, c("loading"));
    if (mine !== drawing) return;
    create.hidden = !got;
    if (!got) return;
    me = got.me;
    const state = root.querySelector("[data-my-state]");
    const r = await api("GET", "/api/circles");
    if (mine !== drawing) return;
    if (r.status !== 200) { say(state, refusal(r)); return; }
    const circles = r.data.circles || [];
    const cards = await Promise.all(circles.map((circle, i) => circleCard(root, circle, i)));
    if (mine !== drawing) return;
    const name = who(me.contributor);
    say(state, circles.length ? c("count", { who: name, n: circles.length }) : c("none", { who: name }));
    list.replaceChildren(...cards);
  }

  function bindCreate(root) {
    const form = root.querySelector("[data-circle-create]");
    const result = form.querySelector("[data-create-result]");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const name = form.elements.name.value.trim();
      if (!name) { form.elements.name.focus(); return; }
      const body = { schema_version: 1, name };
      const limits = {};
      for (const field of ["requests_per_day", "tokens_per_day"]) {
        if (form.elements[field].value.trim() !== "") limits[field] = Number(form.elements[field].value);
      }
      if (Object.keys(limits).length) body.default_limits = limits;
      const r = await api("POST", "/api/circles", body);
      if (r.status !== 201) { say(result, refusal(r)); return; }
      form.reset();
      await showCircles(root);
      say(result, c("created", { name: r.data.circle.name }));
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.querySelector("[data-my-circles]");
    if (!root) return;
    L().me.bindUseKey(root.querySelector("[data-use-key]"), () => showCircles(root));
    root.querySelector("[data-use-key]").hidden = false;
    bindCreate(root);
    showCircles(root);
  });
})();
