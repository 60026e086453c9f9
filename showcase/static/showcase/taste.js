// The tasting panel: get a token from the tracker, call the rig's endpoint with fetch (the rig's own URL, or its
// relay's when it is relayed: the token's PublicNode says which), read its SSE stream piece by piece
// (ReadableStream), and measure TTFT and tok/s here, from the arrival times of the pieces: never from numbers the
// rig reports about itself. Afterwards: download the replay, share the timing (opt-in), publish the replay (opt-in).
// Those two take the upload key that came with the token, kept here in memory beside it and never sent to the rig:
// the rig's operator sees the token itself, so the token alone cannot speak for this taster.
"use strict";
(function () {
  const L = () => window.LuckRig;
  const t = (...a) => window.LuckRig.t(...a);

  function setup(panel) {
    const config = JSON.parse(document.getElementById("lr-taste").textContent);
    const form = panel.querySelector("[data-taste-form]");
    const status = panel.querySelector("[data-taste-status]");
    const output = panel.querySelector("[data-taste-output]");
    const timingEl = panel.querySelector("[data-taste-timing]");
    const after = panel.querySelector("[data-taste-after]");
    const afterStatus = panel.querySelector("[data-after-status]");
    const go = panel.querySelector("[data-taste-go]");
    let last = null;  // {result, replay, file}
    form.hidden = false;
    const notice = panel.querySelector("[data-pk-notice]");
    form.querySelectorAll("input[name=mode]").forEach((radio) => radio.addEventListener("change", () => {
      if (notice) notice.hidden = radio.value !== "public-key" || !radio.checked;
    }));

    function showTiming(el, timing) {
      const rows = [
        [t("ttft"), timing.ttft_ms === null ? "—" : timing.ttft_ms + " ms"],
        [t("tps"), timing.tok_per_sec === null ? "—" : String(timing.tok_per_sec)],
        [t("queue_wait"), timing.queue_wait_sec + " s"],
        [t("tokens"), String(timing.output_tokens)],
      ];
      L().fillList(el, rows);
      const note = document.createElement("div"); note.className = "muted"; note.textContent = t("measured_here");
      el.append(note);
      el.hidden = false;
    }

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const prompt = form.elements.prompt.value;
      const system = form.elements.system.value.trim();
      if (!form.elements.ack.checked) { status.textContent = t("ack_required"); return; }
      if (!prompt.trim()) { status.textContent = t("prompt_required"); return; }
      // A new tasting forgets the last one: Download, Share and Publish must never act on the previous answer.
      last = null;
      go.disabled = true; after.hidden = true; timingEl.hidden = true; output.textContent = ""; afterStatus.textContent = "";
      const mode = (form.querySelector("input[name=mode]:checked") || { value: "plain" }).value;
      try { await taste(prompt, system, mode); } finally { go.disabled = false; }
    });

    async function taste(prompt, system, mode) {
      const T = window.LuckRigTasting;
      // Checked before a token is spent (the core checks again on the URL the token names).
      const early = T.mixedContent(config.endpoint_url, config.reachability);
      if (early) { status.textContent = early; return; }
      const messages = (system ? [{ role: "system", content: system }] : []).concat([{ role: "user", content: prompt }]);
      const result = await T.run({
        nodeId: config.node_id, messages, mode, fingerprint: config.fingerprint,
        onStatus: (text) => { status.textContent = text; },
        onPiece: (piece) => { output.append(document.createTextNode(piece)); },
      });
      if (result.timing) showTiming(timingEl, result.timing);
      if (!result.answer) return;
      const replay = T.replay(result, { prompt, system });
      last = { result, replay, file: T.fileName(replay) };
      after.hidden = false;
      after.querySelectorAll("button").forEach((b) => { b.disabled = false; });
    }

    after.querySelector("[data-download]").addEventListener("click", () => {
      if (!last) return;
      const blob = new Blob([JSON.stringify(last.replay, null, 2)], { type: "application/json" });
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob); a.download = last.file;
      document.body.append(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    });

    after.querySelector("[data-share-timing]").addEventListener("click", async (ev) => {
      if (!last) return;
      ev.target.disabled = true;
      const r = await window.LuckRigTasting.shareTiming(last.result);
      if (r.status === 201) {
        const n = r.data.community_timing.samples_count;
        // A sample counts once the rig has reported the tasting (docs/scoring.md): until then, say so.
        afterStatus.textContent = r.data.counted === false ? t("shared_pending") : t("shared", { n });
        document.querySelectorAll("[data-community-n]").forEach((el) => { el.textContent = n; });
      } else { afterStatus.textContent = L().explain(r.status, r.data, r.headers); ev.target.disabled = false; }
    });

    after.querySelector("[data-publish]").addEventListener("click", async (ev) => {
      if (!last) return;
      ev.target.disabled = true;
      const r = await window.LuckRigTasting.publish(last.result, last.replay);
      if (r.status === 201) {
        afterStatus.replaceChildren(document.createTextNode(t("published")));
        const a = document.createElement("a"); a.href = r.data.url; a.textContent = r.data.url;
        afterStatus.append(a);
      } else { afterStatus.textContent = L().explain(r.status, r.data, r.headers); ev.target.disabled = false; }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const panel = document.querySelector("section.taste");
    if (panel && document.getElementById("lr-taste")) setup(panel);
  });
})();
