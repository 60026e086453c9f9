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

  function stamp(d) {
    const p = (n) => String(n).padStart(2, "0");
    return d.getUTCFullYear() + "-" + p(d.getUTCMonth() + 1) + "-" + p(d.getUTCDate()) + "_" + p(d.getUTCHours()) + p(d.getUTCMinutes()) + p(d.getUTCSeconds());
  }
  const round = (x, n) => (x === null || x === undefined ? null : Math.round(x * 10 ** n) / 10 ** n);

  // Reads an SSE body incrementally; calls onComment(text) and onData(text) per line / event as they arrive.
  async function readSSE(body, onComment, onData) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl).replace(/\r$/, "");
        buffer = buffer.slice(nl + 1);
        if (line === "") { if (data.length) { const stop = onData(data.join("\n")); data = []; if (stop) { reader.cancel().catch(() => {}); return; } } }
        else if (line.startsWith(":")) onComment(line.slice(1).trim());
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
    }
    if (data.length) onData(data.join("\n"));
  }

  function setup(panel) {
    const config = JSON.parse(document.getElementById("lr-taste").textContent);
    const form = panel.querySelector("[data-taste-form]");
    const status = panel.querySelector("[data-taste-status]");
    const output = panel.querySelector("[data-taste-output]");
    const timingEl = panel.querySelector("[data-taste-timing]");
    const after = panel.querySelector("[data-taste-after]");
    const afterStatus = panel.querySelector("[data-after-status]");
    const go = panel.querySelector("[data-taste-go]");
    let last = null;  // {token, uploadKey, replay, timing, file}
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

    // Public-key mode: the conversation is sealed to the rig's key (the token carries this browser's public key,
    // so only this browser can open the answer). Returns null and says why when the keys do not add up.
    async function publicKeyToken() {
      const S = window.LuckRigSubtext;
      const mine = await S.tasterKey();
      const r = await L().postJSON("/api/tokens", { node_id: config.node_id, crypto_mode: "public-key", user_public_key: mine.publicPem }, L().contributorKey());
      if (r.status !== 201) { status.textContent = L().explain(r.status, r.data, r.headers); return null; }
      const issued = r.data;
      // The key the token names must be the one whose fingerprint this page shows (and the fingerprint must be
      // that key's): checking it out of band is then checking this page's fingerprint.
      const fp = await S.fingerprintOfPem(issued.node_public_key);
      if (fp !== issued.node_public_key_fingerprint || fp !== config.fingerprint) { status.textContent = t("pk_key_mismatch"); return null; }
      return { issued, mine };
    }

    // Browsers refuse plain-http calls from an https page. The URL is the rig's own for a direct rig and its
    // relay's for a relayed one, so the check is on the scheme alone and only the sentence differs.
    function mixedContent(url, reachability) {
      if (location.protocol !== "https:" || !/^http:/i.test(url || "")) return null;
      return t(reachability === "relayed" ? "mixed_content.relayed" : "mixed_content.direct");
    }

    async function taste(prompt, system, mode) {
      // Checked before a token is spent, and again on the URL the token names (a relayed rig may have moved).
      const early = mixedContent(config.endpoint_url, config.reachability);
      if (early) { status.textContent = early; return; }
      status.textContent = t("getting_token");
      const messages = (system ? [{ role: "system", content: system }] : []).concat([{ role: "user", content: prompt }]);
      let issued, mine = null, body;
      try {
        if (mode === "public-key") {
          const got = await publicKeyToken();
          if (!got) return;
          ({ issued, mine } = got);
          const sealed = await window.LuckRigSubtext.sealRequest(messages, {}, issued.node_public_key, issued.jti, issued.node.id);
          body = { messages: [{ role: "user", content: sealed }], stream: true };
        } else {
          const r = await L().postJSON("/api/tokens", { node_id: config.node_id, crypto_mode: "plain" }, L().contributorKey());
          if (r.status !== 201) { status.textContent = L().explain(r.status, r.data, r.headers); return; }
          issued = r.data;
          body = { messages, stream: true, stream_options: { include_usage: true } };
        }
      } catch (e) { status.textContent = t("errors.unknown", { code: "network", msg: String(e) }); return; }

      if (!issued.node.endpoint_url) { status.textContent = t("no_endpoint"); return; }
      const refused = mixedContent(issued.node.endpoint_url, issued.node.reachability);
      if (refused) { status.textContent = refused; return; }
      const endpoint = issued.node.endpoint_url.replace(/\/+$/, "") + "/chat/completions";
      status.textContent = t("connecting");
      const started = performance.now();
      let firstByte = null, firstData = null, firstToken = null, lastToken = null, lastQueue = null, sawQueue = false;
      const chunks = [], pieces = [];
      let usage = null, luckrig = {}, failed = null;
      let resp;
      try {
        resp = await fetch(endpoint, {
          method: "POST",
          headers: { "Content-Type": "application/json", "Authorization": "Bearer " + issued.token, "Accept": "text/event-stream" },
          body: JSON.stringify(body),
        });
      } catch (e) { status.textContent = t("network_error"); return; }
      if (resp.status !== 200) {
        let data = null; try { data = await resp.json(); } catch (e) { data = null; }
        status.textContent = L().explain(resp.status, data, resp.headers);
        return;
      }
      let finished = false;
      try {
        await readSSE(resp.body, (comment) => {
          firstByte = firstByte || performance.now();
          const m = /^queue position=(\d+) eta_sec=(\d+)/.exec(comment);
          if (m) { sawQueue = true; lastQueue = performance.now(); status.textContent = t("queued", { n: m[1], s: m[2] }); }
        }, (data) => {
          const now = performance.now();
          firstByte = firstByte || now;
          firstData = firstData || now;
          if (data === "[DONE]") { finished = true; return true; }
          let chunk; try { chunk = JSON.parse(data); } catch (e) { return false; }
          if (chunk.error) { failed = chunk.error; return false; }
          if (chunk.usage) { usage = chunk.usage; luckrig = chunk.luckrig || {}; }
          for (const choice of chunk.choices || []) {
            const piece = choice.delta && choice.delta.content;
            if (piece) {
              if (firstToken === null) { firstToken = now; status.textContent = t(mine ? "decrypting" : "generating_now"); }
              lastToken = now;
              chunks.push(round(now - started, 1));
              pieces.push(piece);
              if (!mine) output.append(document.createTextNode(piece));
            }
          }
          return false;
        });
      } catch (e) { failed = failed || { message: String(e), code: "stream" }; }
      if (failed) { status.textContent = L().explain(502, { error: failed }, null); }
      else if (!finished) { status.textContent = t("stream_cut"); }
      else { status.textContent = pieces.length ? t("done") : t("empty_answer"); }

      let answer = pieces;
      if (mine && pieces.length && !failed) {
        try {
          const opened = await window.LuckRigSubtext.openResponse(pieces.join(""), mine.privateKey, issued.jti, issued.node.id);
          answer = [opened.content];
          output.textContent = opened.content;
          usage = opened.usage || usage;
          luckrig = opened.luckrig || {};
        } catch (e) { status.textContent = t("pk_open_failed", { reason: e.reason || e.message }); return; }
      }

      const outputTokens = (usage && usage.completion_tokens) || answer.length;
      // In public-key mode the answer arrives in one piece: its rate is tokens over the time from the start of
      // generation (the last queue comment, or the request) to its arrival.
      const generationSec = firstToken === null ? 0 : mine ? (firstToken - (lastQueue || started)) / 1000 : (lastToken - firstToken) / 1000;
      const rateTokens = mine ? outputTokens : outputTokens - 1;
      const timing = {
        schema_version: 1,
        node_id: issued.node.id,
        mode: mine ? "public-key" : "plain",
        tok_per_sec: generationSec > 0 && rateTokens > 0 ? round(rateTokens / generationSec, 2) : null,
        ttft_ms: firstToken !== null ? round(firstToken - started, 1) : null,
        network_ttft_ms: firstByte !== null ? round(firstByte - started, 1) : null,
        proxy_ttft_ms: luckrig.proxy_ttft_ms === undefined ? null : luckrig.proxy_ttft_ms,
        generation_sec: round(generationSec, 3),
        queue_wait_sec: sawQueue && firstData !== null ? round((firstData - started) / 1000, 3) : 0,
        output_tokens: outputTokens,
        tokenizer: issued.node.model_name.slice(0, 64),
        limited_output_truncated: Boolean(luckrig.truncated),
      };
      showTiming(timingEl, timing);
      if (!answer.length) return;
      const when = new Date();
      const replay = {
        schema_version: 1,
        node_id: issued.node.id,
        created_at: when.toISOString().replace(/\.\d{3}Z$/, "Z"),
        prompt,
        system: system || null,
        response: answer.join(""),
        chunk_timestamps: mine ? [chunks[0]] : chunks,
        chunks: answer,
        timing,
      };
      last = { token: issued.token, uploadKey: issued.upload_key, replay, timing, file: stamp(when) + "_" + issued.node.id + ".json" };
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
      const body = Object.fromEntries(Object.entries(last.timing).filter(([, v]) => v !== null));
      const r = await L().postJSON("/api/replay/timing", body, last.uploadKey);
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
      const r = await L().postJSON("/api/replays", last.replay, last.uploadKey);
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
