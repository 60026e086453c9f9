// Rig against rig (/compare/): one prompt sent to every live compared rig at once, each with its own tasting
// token (LuckRigTasting.run fetches one per rig, and spends it again next round while it has requests left), the
// answers streaming side by side as safe Markdown (markdown.js). TTFT and tok/s are
// measured here while the pieces arrive, then replaced by the finished tasting's numbers. Afterwards the answers
// can be kept as one replay: each is published with its own upload key (POST /api/replays), then the set
// groups them (POST /api/replay-sets, each member proved by that same key).
"use strict";
(function () {
  const t = (...a) => window.LuckRig.t(...a);
  const T = () => window.LuckRigTasting;

  function column(root, rigId) {
    const col = root.querySelector(`[data-arena-rig="${CSS.escape(rigId)}"]`);
    return {
      col,
      state: col.querySelector("[data-rig-state]"),
      output: col.querySelector("[data-rig-output]"),
      ttft: col.querySelector("[data-rig-ttft]"),
      tps: col.querySelector("[data-rig-tps]"),
    };
  }

  function ending(result) {
    // A tiny model can end at once with nothing written: that is not "complete", and it is not kept.
    if (result.ok) return result.answer ? ["done", t("arena.end_done")] : ["empty", t("empty_answer")];
    const code = result.error && result.error.code;
    if (code === "aborted") return ["stopped", t("arena.end_stopped")];
    if (code === "stream_cut") return ["cut", t("arena.end_cut")];
    return ["refused", t("arena.end_refused", { msg: result.error ? result.error.message : "" })];
  }

  // One rig's tasting, drawn into its column as it happens. `token` is the last token this rig was given: spent
  // again while it has requests left, so that a round costs a token per rig only when the last one is used up.
  async function taste(rig, c, messages, signal, token) {
    c.output.textContent = ""; c.ttft.textContent = "—"; c.tps.textContent = "—";
    c.col.dataset.end = "running";
    let first = null, pieces = 0;
    const view = window.LuckRigMarkdown.streaming(c.output);  // safe Markdown, as on the rig page
    const result = await T().run({
      nodeId: rig.id,
      messages,
      signal,
      token,
      onStatus: (sentence) => { c.state.textContent = sentence; },
      onPiece: (text, ms) => {
        view.add(text);
        pieces += 1;
        if (first === null) { first = ms; c.ttft.textContent = Math.round(ms) + " ms"; }
        else if (ms > first) c.tps.textContent = ((pieces - 1) / ((ms - first) / 1000)).toFixed(1);
      },
    });
    view.finish(result.answer);
    const [end, sentence] = ending(result);
    c.col.dataset.end = end;
    c.state.textContent = sentence;
    const timing = result.timing;
    if (timing) {
      c.ttft.textContent = timing.ttft_ms === null ? "—" : Math.round(timing.ttft_ms) + " ms";
      c.tps.textContent = timing.tok_per_sec === null ? "—" : t("arena.tps_final", { tps: timing.tok_per_sec, tokens: timing.output_tokens });
    }
    return { rig, result };
  }

  function link(url) {
    const a = document.createElement("a"); a.href = url; a.textContent = url;
    return a;
  }

  function setup(root) {
    const config = JSON.parse(document.getElementById("lr-arena").textContent);
    const form = root.querySelector("[data-arena-form]");
    const go = root.querySelector("[data-arena-go]");
    const stop = root.querySelector("[data-arena-stop]");
    const status = root.querySelector("[data-arena-status]");
    const after = root.querySelector("[data-arena-after]");
    const keep = root.querySelector("[data-arena-keep]");
    const keepStatus = root.querySelector("[data-keep-status]");
    let round = null;  // {prompt, createdAt, finished: [{rig, result, replayId?}]}
    let controller = null;
    const tokens = new Map();  // rig id → the last token issued for it (LuckRigTasting.run's `issued`)
    form.hidden = false;

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const prompt = form.elements.prompt.value;
      if (!form.elements.ack.checked) { status.textContent = t("ack_required"); return; }
      if (!prompt.trim()) { status.textContent = t("prompt_required"); return; }
      // A new round forgets the last one: Keep must never publish the previous answers.
      round = null; after.hidden = true; keepStatus.textContent = ""; keep.disabled = false;
      go.disabled = true; stop.disabled = false;
      controller = new AbortController();
      const createdAt = new Date();
      const messages = [{ role: "user", content: prompt }];
      status.textContent = t("arena.sending", { n: config.rigs.length });
      const done = await Promise.all(config.rigs.map((rig) => taste(rig, column(root, rig.id), messages, controller.signal, tokens.get(rig.id))));
      for (const d of done) if (d.result.issued) tokens.set(d.rig.id, d.result.issued);
      go.disabled = false; stop.disabled = true;
      const finished = done.filter((d) => d.result.ok && d.result.answer);
      status.textContent = t("arena.finished", { ok: finished.length, n: done.length });
      round = { prompt, createdAt, finished };
      after.hidden = finished.length < 2;
    });

    stop.addEventListener("click", () => { if (controller) controller.abort(); });

    keep.addEventListener("click", async () => {
      if (!round || round.finished.length < 2) { keepStatus.textContent = t("arena.keep_needs_two"); return; }
      keep.disabled = true;
      keepStatus.textContent = t("arena.publishing", { n: round.finished.length });
      const members = [];
      for (const entry of round.finished) {
        const c = column(root, entry.rig.id);
        if (!entry.replayId) {  // published once only, even when the set has to be tried again
          const file = T().replay(entry.result, { prompt: round.prompt, createdAt: round.createdAt });
          const r = await T().publish(entry.result, file);
          if (r.status !== 201) { c.state.textContent = t("arena.member_failed", { msg: window.LuckRig.explain(r.status, r.data, r.headers) }); continue; }
          entry.replayId = r.data.id; entry.url = r.data.url;
        }
        members.push({ replay_id: entry.replayId, upload_key: entry.result.issued.upload_key, url: entry.url });
      }
      if (members.length < 2) {
        keepStatus.replaceChildren(document.createTextNode(members.length ? t("arena.kept_single") : t("arena.keep_needs_two")));
        if (members.length) keepStatus.append(link(members[0].url));
        return;
      }
      const r = await window.LuckRig.postJSON("/api/replay-sets", {
        schema_version: 1, members: members.map((m) => ({ replay_id: m.replay_id, upload_key: m.upload_key })),
      });
      if (r.status === 201) {
        keepStatus.replaceChildren(document.createTextNode(t("arena.kept")), link(r.data.url));
      } else {
        keepStatus.textContent = window.LuckRig.explain(r.status, r.data, r.headers);
        keep.disabled = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.querySelector("section.arena");
    if (root && document.getElementById("lr-arena")) setup(root);
  });
})();
