// The tasting panel: get a token from the tracker, call the rig's own endpoint with fetch, read its SSE stream
// piece by piece (ReadableStream), and measure TTFT and tok/s here, from the arrival times of the pieces:
// never from numbers the rig reports about itself. Afterwards: download the replay, share the timing (opt-in),
// publish the replay (opt-in).
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
    let last = null;  // {token, replay, timing}
    form.hidden = false;

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
      go.disabled = true; after.hidden = true; timingEl.hidden = true; output.textContent = ""; afterStatus.textContent = "";
      try { await taste(prompt, system); } finally { go.disabled = false; }
    });

    async function taste(prompt, system) {
      status.textContent = t("getting_token");
      let issued;
      try {
        const r = await L().postJSON("/api/tokens", { node_id: config.node_id, crypto_mode: "plain" }, L().contributorKey());
        if (r.status !== 201) { status.textContent = L().explain(r.status, r.data, r.headers); return; }
        issued = r.data;
      } catch (e) { status.textContent = t("errors.unknown", { code: "network", msg: String(e) }); return; }

      const messages = (system ? [{ role: "system", content: system }] : []).concat([{ role: "user", content: prompt }]);
      const endpoint = issued.node.endpoint_url.replace(/\/+$/, "") + "/chat/completions";
      status.textContent = t("connecting");
      const started = performance.now();
      let firstByte = null, firstData = null, firstToken = null, lastToken = null, sawQueue = false;
      const chunks = [], pieces = [];
      let usage = null, luckrig = {}, failed = null;
      let resp;
      try {
        resp = await fetch(endpoint, {
          method: "POST",
          headers: { "Content-Type": "application/json", "Authorization": "Bearer " + issued.token, "Accept": "text/event-stream" },
          body: JSON.stringify({ messages, stream: true, stream_options: { include_usage: true } }),
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
          if (m) { sawQueue = true; status.textContent = t("queued", { n: m[1], s: m[2] }); }
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
              if (firstToken === null) { firstToken = now; status.textContent = t("generating_now"); }
              lastToken = now;
              chunks.push(round(now - started, 1));
              pieces.push(piece);
              output.append(document.createTextNode(piece));
            }
          }
          return false;
        });
      } catch (e) { failed = failed || { message: String(e), code: "stream" }; }
      if (failed) { status.textContent = L().explain(502, { error: failed }, null); }
      else if (!finished) { status.textContent = t("stream_cut"); }
      else { status.textContent = t("done"); }

      const outputTokens = (usage && usage.completion_tokens) || pieces.length;
      const generationSec = firstToken !== null ? (lastToken - firstToken) / 1000 : 0;
      const timing = {
        schema_version: 1,
        node_id: issued.node.id,
        mode: "plain",
        tok_per_sec: generationSec > 0 && outputTokens > 1 ? round((outputTokens - 1) / generationSec, 2) : null,
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
      if (!pieces.length) return;
      const when = new Date();
      const replay = {
        schema_version: 1,
        node_id: issued.node.id,
        created_at: when.toISOString().replace(/\.\d{3}Z$/, "Z"),
        prompt,
        system: system || null,
        response: pieces.join(""),
        chunk_timestamps: chunks,
        chunks: pieces,
        timing,
      };
      last = { token: issued.token, replay, timing, file: stamp(when) + "_" + issued.node.id + ".json" };
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
      const r = await L().postJSON("/api/replay/timing", body, last.token);
      if (r.status === 201) {
        const n = r.data.community_timing.samples_count;
        afterStatus.textContent = t("shared", { n });
        document.querySelectorAll("[data-community-n]").forEach((el) => { el.textContent = n; });
      } else { afterStatus.textContent = L().explain(r.status, r.data, r.headers); ev.target.disabled = false; }
    });

    after.querySelector("[data-publish]").addEventListener("click", async (ev) => {
      if (!last) return;
      ev.target.disabled = true;
      const r = await L().postJSON("/api/replays", last.replay, last.token);
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
