// The tasting panel on a rig page: a conversation with the rig, turn by turn. The streaming, the token and the
// measurements are tasting.js's (shared with rig against rig); this file draws. Each turn is its own tasting:
// its answer (rendered as safe Markdown by markdown.js), its numbers, and its own Download / Share timing /
// Publish, which act on that turn only. A turn spends the previous turn's token again while it has requests
// left and has not expired (tasting.js decides), else a new one. Share and Publish take the upload key that came
// with the turn's token, kept here in memory beside it and never sent to the rig: the rig's operator sees the
// token itself, so the token alone cannot speak for this taster. The tracker takes one timing and one replay per
// token, so when turns share a token, the first turn to use either action uses it up for the others (said so).
// My circles has one panel for the rigs of its circles (templates/showcase/_taste_form.html, `dynamic`):
// window.LuckRigTaste.setup(panel, config, onTurn) → {use(config)}, which points it at another rig (a new
// conversation, and a token of its own: `config.circle_id` asks the tracker for a token through that circle);
// `onTurn(result)`, when given, is told of each finished turn (My circles then redraws the usage bars). A rig
// whose `config.visibility` is `circle` offers no Publish (its replays stay with the taster).
"use strict";
(function () {
  const t = (...a) => window.LuckRig.t(...a);
  const T = () => window.LuckRigTasting;

  // Ticking the acknowledgement once is enough in this browser (per kind of rig: a relayed rig's sentence also
  // names the relay, so it is asked again there).
  function ackStore(reachability) { return "luckrig.taste_ack." + (reachability === "relayed" ? "relayed" : "direct"); }
  function remembered(key) { try { return window.localStorage.getItem(key) === "1"; } catch (e) { return false; } }
  function remember(key, on) {
    try { if (on) window.localStorage.setItem(key, "1"); else window.localStorage.removeItem(key); } catch (e) { /* private mode: asked each time */ }
  }

  function setup(panel, first, onTurn) {
    let config = first;
    const form = panel.querySelector("[data-taste-form]");
    const status = panel.querySelector("[data-taste-status]");
    const log = panel.querySelector("[data-taste-log]");
    const template = panel.querySelector("[data-turn-template]");
    const go = panel.querySelector("[data-taste-go]");
    const reset = panel.querySelector("[data-new-conversation]");
    const promptLabel = panel.querySelector("[data-prompt-label]");
    const firstLabel = promptLabel.textContent;
    const paramError = panel.querySelector("[data-param-error]");
    const maxTokens = form.elements.max_tokens;
    const maxHelp = panel.querySelector("[data-max-tokens-help]");
    const ack = form.elements.ack;

    // The conversation: its system message, the turns so far (each {prompt, answer, result, replay, el}), and
    // the last token, offered to the next turn. `running` guards against a second submit mid-answer. A new
    // conversation keeps the token: its remaining requests are this taster's, whatever they ask next.
    let conversation = null, running = null;
    function newConversation() {
      if (running) running.abort();
      conversation = { system: "", turns: [], issued: conversation ? conversation.issued : null };
      log.replaceChildren(); log.hidden = true;
      reset.hidden = true;
      form.elements.system.readOnly = false;
      promptLabel.textContent = firstLabel;
      status.textContent = "";
    }
    newConversation();
    form.hidden = false;
    ack.checked = remembered(ackStore(config.reachability));
    ack.addEventListener("change", () => remember(ackStore(config.reachability), ack.checked));

    const notice = panel.querySelector("[data-pk-notice]");
    form.querySelectorAll("input[name=mode]").forEach((radio) => radio.addEventListener("change", () => {
      if (notice) notice.hidden = radio.value !== "public-key" || !radio.checked;
    }));

    // The output cap a request may ask for: the token's, once one was issued; before that the tier's guess.
    function outputCap() {
      const limits = conversation.issued && conversation.issued.limits;
      if (limits) return limits.max_output_tokens;  // the per-request cap (docs/api.md)
      return window.LuckRig.contributorKey() ? config.output_cap_contributor : config.output_cap;
    }
    function showCap() {
      const cap = outputCap();
      maxTokens.max = String(cap); maxTokens.placeholder = String(cap);
      maxHelp.textContent = t("max_tokens_help", { n: cap });
    }
    showCap();

    // Temperature and max tokens, checked here so that an out-of-range value says what is allowed (the
    // browser's own bubble is easy to miss). Returns {params} or {error}.
    function readParams() {
      const params = {};
      const temp = form.elements.temperature;
      if (temp.value.trim() !== "" || temp.validity.badInput) {
        const v = Number(temp.value);
        if (temp.validity.badInput || !Number.isFinite(v) || v < 0 || v > 2) return { error: t("temperature_range"), field: temp };
        params.temperature = v;
      }
      if (maxTokens.value.trim() !== "" || maxTokens.validity.badInput) {
        const v = Number(maxTokens.value), cap = outputCap();
        if (maxTokens.validity.badInput || !Number.isInteger(v) || v < 1 || v > cap) return { error: t("max_tokens_range", { n: cap }), field: maxTokens };
        params.max_tokens = v;
      }
      return { params };
    }
    function checkParams() {
      const got = readParams();
      for (const el of [form.elements.temperature, maxTokens]) el.removeAttribute("aria-invalid");
      paramError.hidden = !got.error;
      paramError.textContent = got.error || "";
      if (got.error) got.field.setAttribute("aria-invalid", "true");
      return got;
    }
    form.elements.temperature.addEventListener("input", checkParams);
    maxTokens.addEventListener("input", checkParams);

    reset.addEventListener("click", () => { newConversation(); form.elements.prompt.focus(); });

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (running) return;
      const prompt = form.elements.prompt.value;
      if (!ack.checked) { status.textContent = t("ack_required"); return; }
      if (!prompt.trim()) { status.textContent = t("prompt_required"); return; }
      const got = checkParams();
      if (got.error) {
        form.querySelector("[data-taste-options]").open = true;
        status.textContent = got.error; got.field.focus();
        return;
      }
      const early = T().mixedContent(config.endpoint_url, config.reachability);
      if (early) { status.textContent = early; return; }
      if (!conversation.turns.length) conversation.system = form.elements.system.value.trim();
      const mode = (form.querySelector("input[name=mode]:checked") || { value: "plain" }).value;
      await taste(prompt, got.params, mode);
    });

    function history() {
      const messages = conversation.system ? [{ role: "system", content: conversation.system }] : [];
      for (const turn of conversation.turns) {
        if (turn.inConversation) messages.push({ role: "user", content: turn.prompt }, { role: "assistant", content: turn.answer });
      }
      return messages;
    }

    function addTurn(prompt) {
      const el = template.content.firstElementChild.cloneNode(true);
      el.querySelector("[data-turn-prompt]").textContent = prompt;
      log.append(el); log.hidden = false;
      return el;
    }

    async function taste(prompt, params, mode) {
      const earlier = history();
      const el = addTurn(prompt);
      const out = el.querySelector("[data-taste-output]");
      const view = window.LuckRigMarkdown.streaming(out);  // re-rendered at most once a frame
      running = new AbortController();
      const signal = running.signal;
      go.disabled = true; reset.hidden = false;
      status.textContent = "";  // the last turn's "Done." is not this one's
      form.elements.system.readOnly = true;
      let result;
      try {
        result = await T().run({
          nodeId: config.node_id, messages: earlier.concat([{ role: "user", content: prompt }]), params, mode,
          fingerprint: config.fingerprint, token: conversation.issued, signal, circleId: config.circle_id,
          onStatus: (text) => { if (!signal.aborted) status.textContent = text; },
          onPiece: (piece) => view.add(piece),
        });
      } finally { go.disabled = false; running = null; }
      if (signal.aborted) { el.remove(); return; }  // "New conversation" mid-answer: that turn is gone
      view.finish(result.answer);
      if (result.issued) { conversation.issued = result.issued; showCap(); }
      const turn = { prompt, answer: result.answer, result, el, inConversation: result.ok && Boolean(result.answer) };
      conversation.turns.push(turn);
      if (!turn.inConversation) {
        const note = el.querySelector("[data-turn-note]");
        note.textContent = (result.error ? result.error.message + " " : "") + t("turn_left_out");
        note.hidden = false;
      }
      if (result.timing) showTiming(el.querySelector("[data-taste-timing]"), result.timing);
      if (result.answer) {
        // The replay of a turn: its prompt and answer, the earlier turns as `messages` (docs/api.md).
        const past = earlier.filter((m) => m.role !== "system");
        turn.replay = T().replay(result, { prompt, system: conversation.system, history: past });
        actions(turn);
      }
      if (turn.inConversation) {
        form.elements.prompt.value = "";
        promptLabel.textContent = promptLabel.dataset.nextLabel;
      }
      if (onTurn) onTurn(result);
    }

    function showTiming(dl, timing) {
      const rows = [
        [t("ttft"), timing.ttft_ms === null ? "—" : timing.ttft_ms + " ms"],
        [t("tps"), timing.tok_per_sec === null ? "—" : String(timing.tok_per_sec)],
        [t("queue_wait"), timing.queue_wait_sec + " s"],
        [t("tokens"), String(timing.output_tokens)],
      ];
      window.LuckRig.fillList(dl, rows);
      const note = document.createElement("div"); note.className = "muted"; note.textContent = t("measured_here");
      dl.append(note);
      dl.hidden = false;
    }

    // A turn's own buttons: they hold that turn's replay and token and nothing else.
    function actions(turn) {
      const after = turn.el.querySelector("[data-taste-after]");
      const afterStatus = after.querySelector("[data-after-status]");
      const share = after.querySelector("[data-share-timing]");
      const publish = after.querySelector("[data-publish]");
      const issued = turn.result.issued;
      after.hidden = false;
      // A circle rig's replays are never published (the tracker answers 403 circle_rig_not_public): the button
      // is not offered, and a line says why; its timing may still be shared.
      if (config.visibility === "circle") {
        publish.hidden = true;
        after.querySelector("[data-replay-private]").hidden = false;
      }

      after.querySelector("[data-download]").addEventListener("click", () => {
        const blob = new Blob([JSON.stringify(turn.replay, null, 2)], { type: "application/json" });
        const a = document.createElement("a");
        a.href = URL.createObjectURL(blob); a.download = T().fileName(turn.replay);
        document.body.append(a); a.click(); a.remove();
        setTimeout(() => URL.revokeObjectURL(a.href), 10000);
      });

      share.addEventListener("click", async () => {
        if (issued.timing_shared_by) { afterStatus.textContent = t("token_timing_used"); return; }
        share.disabled = true;
        const r = await T().shareTiming(turn.result);
        if (r.status === 201) {
          issued.timing_shared_by = turn;
          const n = r.data.community_timing.samples_count;
          // A sample counts once the rig has reported the tasting (docs/scoring.md): until then, say so.
          afterStatus.textContent = r.data.counted === false ? t("shared_pending") : t(n === 1 ? "shared.one" : "shared.other", { n });
          document.querySelectorAll("[data-community-n]").forEach((el) => { el.textContent = n; });
        } else { afterStatus.textContent = window.LuckRig.explain(r.status, r.data, r.headers); share.disabled = false; }
      });

      publish.addEventListener("click", async () => {
        if (issued.published_by) { afterStatus.textContent = t("token_replay_used"); return; }
        publish.disabled = true;
        const r = await T().publish(turn.result, turn.replay);
        if (r.status === 201) {
          issued.published_by = turn;
          afterStatus.replaceChildren(document.createTextNode(t("published")));
          const a = document.createElement("a"); a.href = r.data.url; a.textContent = r.data.url;
          afterStatus.append(a);
        } else { afterStatus.textContent = window.LuckRig.explain(r.status, r.data, r.headers); publish.disabled = false; }
      });
    }

    // Another rig in the same panel: its acknowledgement, its modes, its own conversation and token.
    function use(next) {
      if (running) running.abort();
      config = next;
      conversation = null;
      newConversation();
      const relayed = config.reachability === "relayed";
      panel.querySelectorAll("[data-ack-for]").forEach((el) => { el.hidden = (el.dataset.ackFor === "relayed") !== relayed; });
      ack.checked = remembered(ackStore(config.reachability));
      const keyed = Boolean(config.fingerprint);
      panel.querySelectorAll("[data-pk-only]").forEach((el) => { el.hidden = !keyed; });
      const plain = form.querySelector("input[name=mode][value=plain]");
      if (plain && !keyed) plain.checked = true;
      if (notice) { notice.hidden = true; if (keyed) notice.textContent = t("pk_notice", { fp: config.fingerprint }); }
      showCap();
    }
    return { use };
  }

  window.LuckRigTaste = { setup };

  document.addEventListener("DOMContentLoaded", () => {
    const panel = document.querySelector("section.taste");
    const config = document.getElementById("lr-taste");
    if (panel && config) setup(panel, JSON.parse(config.textContent));
  });
})();
