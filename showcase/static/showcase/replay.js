// The replay player: shows a tasting's answer at its original pace (each piece at its recorded arrival time),
// with play, pause and speed. Plays a published replay, or a replay file opened from disk, which is read here
// and never uploaded.
"use strict";
(function () {
  const t = (...a) => window.LuckRig.t(...a);

  // Pieces of text with their times (ms): the recorded pieces when the file has them, else the answer cut
  // evenly over the recorded timestamps (files from older clients keep only the joined text).
  function piecesOf(replay) {
    const times = Array.isArray(replay.chunk_timestamps) ? replay.chunk_timestamps.map(Number) : [];
    const text = typeof replay.response === "string" ? replay.response : "";
    if (Array.isArray(replay.chunks) && replay.chunks.length === times.length) {
      return replay.chunks.map((c, i) => ({ at: times[i], text: String(c) }));
    }
    if (!times.length) return [{ at: 0, text }];
    const chars = Array.from(text);
    return times.map((at, i) => ({
      at,
      text: chars.slice(Math.round((i * chars.length) / times.length), Math.round(((i + 1) * chars.length) / times.length)).join(""),
    }));
  }

  // A later turn of a conversation carries the turns before it (`messages`): shown as text, oldest first.
  function showEarlier(list, messages) {
    if (!list) return;
    const turns = Array.isArray(messages) ? messages.filter((m) => m && typeof m.content === "string") : [];
    list.replaceChildren(...turns.map((m) => {
      const li = document.createElement("li");
      li.className = "replay-earlier-" + (m.role === "assistant" ? "assistant" : "user");
      const who = document.createElement("strong");
      who.textContent = t(m.role === "assistant" ? "replay_roles.assistant" : "replay_roles.user");
      li.append(who, document.createTextNode(" " + m.content));
      return li;
    }));
    list.closest("[data-replay-earlier-wrap]").hidden = !turns.length;
  }

  function valid(replay) {
    return replay && typeof replay === "object" && replay.schema_version === 1 && typeof replay.response === "string"
      && Array.isArray(replay.chunk_timestamps);
  }

  function player(root) {
    const out = root.querySelector("[data-replay-output]");
    const promptEl = root.querySelector("[data-replay-prompt]");
    const clock = root.querySelector("[data-clock]");
    const play = root.querySelector("[data-play]");
    const pause = root.querySelector("[data-pause]");
    const speed = root.querySelector("[data-speed]");
    const timingEl = root.querySelector("[data-replay-timing]");
    let pieces = [], index = 0, elapsed = 0, timer = null, lastTick = 0;
    // A page that loads markdown.js (a set's page) draws the answer as safe Markdown, as the rig page does;
    // elsewhere it stays plain text.
    const md = window.LuckRigMarkdown;
    if (md) out.classList.add("md");
    let view = md ? md.streaming(out) : null;
    const show = (text) => { if (view) view.add(text); else out.append(document.createTextNode(text)); };
    const clear = () => { out.textContent = ""; if (md) view = md.streaming(out); };

    function tick() {
      const now = performance.now();
      elapsed += (now - lastTick) * Number(speed.value);
      lastTick = now;
      while (index < pieces.length && pieces[index].at <= elapsed) { show(pieces[index].text); index++; }
      clock.textContent = (elapsed / 1000).toFixed(1) + " s";
      if (index >= pieces.length) { stop(); play.textContent = play.dataset.label; index = 0; elapsed = 0; return; }
      timer = setTimeout(tick, Math.max(5, Math.min(100, (pieces[index].at - elapsed) / Number(speed.value))));
    }
    function stop() { clearTimeout(timer); timer = null; play.disabled = false; pause.disabled = true; }
    play.dataset.label = play.textContent;
    play.addEventListener("click", () => {
      if (index === 0 && elapsed === 0) clear();
      play.disabled = true; pause.disabled = false; lastTick = performance.now(); tick();
    });
    pause.addEventListener("click", stop);

    // "Play all" on a replay set's page: every player from its start at once.
    root.addEventListener("luckrig:play-from-start", () => { stop(); index = 0; elapsed = 0; play.click(); });
    return function load(replay) {
      stop(); index = 0; elapsed = 0; clear(); clock.textContent = "0.0 s";
      pieces = piecesOf(replay);
      if (promptEl) promptEl.textContent = replay.prompt || "";
      showEarlier(root.querySelector("[data-replay-earlier]"), replay.messages);
      const timing = replay.timing || {};
      const names = [["ttft_ms", "TTFT ms"], ["tok_per_sec", "tok/s"], ["queue_wait_sec", "queue s"], ["output_tokens", "tokens"]];
      window.LuckRig.fillList(timingEl, names.filter(([k]) => timing[k] !== undefined && timing[k] !== null).map(([k, label]) => [label, String(timing[k])]));
      play.disabled = false;
    };
  }

  document.addEventListener("DOMContentLoaded", () => {
    // One player per replay: a replay set's page holds several, each reading its own json_script block.
    const roots = Array.from(document.querySelectorAll("[data-player]"));
    if (!roots.length) return;
    let load = null;
    for (const root of roots) {
      load = player(root);
      const embedded = document.getElementById(root.dataset.replaySource || "lr-replay");
      if (embedded) load(JSON.parse(embedded.textContent));
      else root.querySelector("[data-play]").disabled = true;
    }
    // Rig against rig: every answer from the start at once, so that their paces compare as they did live.
    const playAll = document.querySelector("[data-play-all]");
    if (playAll) {
      playAll.hidden = false;
      playAll.addEventListener("click", () => roots.forEach((root) => root.dispatchEvent(new Event("luckrig:play-from-start"))));
    }
    const input = document.querySelector("[data-replay-file]");
    if (input) {
      input.addEventListener("change", async () => {
        const status = document.querySelector("[data-file-status]");
        const file = input.files && input.files[0];
        if (!file) return;
        let replay = null;
        try { replay = JSON.parse(await file.text()); } catch (e) { replay = null; }
        if (!valid(replay)) { status.textContent = t("file_bad"); return; }
        status.textContent = file.name + " · " + (replay.node_id || "");
        load(replay);
      });
    }
  });
})();
