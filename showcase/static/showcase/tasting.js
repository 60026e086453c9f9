// The tasting core, shared by the rig page's panel (taste.js) and rig against rig (arena.js): get a token from
// the tracker, call the rig's endpoint with fetch (the rig's own URL, or its relay's when it is relayed: the
// token's PublicNode says which), read its SSE stream piece by piece (ReadableStream), and measure TTFT and tok/s
// here, from the arrival times of the pieces: never from numbers the rig reports about itself. No DOM: callers
// draw. Needs site.js (window.LuckRig: strings, postJSON, explain) and, for public-key mode, subtext.js.
//
// API (window.LuckRigTasting; keep it stable, arena.js builds on it):
//   run({nodeId, messages, params, mode, onStatus, onPiece, signal, token}) → Promise of a result (never rejects)
//     nodeId    the rig's id
//     messages  OpenAI chat messages [{role: "system"|"user"|"assistant", content}], the whole conversation
//     params    optional sampling parameters sent with it, e.g. {temperature: 0.7, max_tokens: 200}
//     mode      "plain" (default: streamed) or "public-key" (encrypted to the rig's key; the answer in one piece)
//     onStatus  optional (sentence, phase): phase is token | connecting | queued | generating | decrypting |
//               done | error; the sentence is already in the visitor's language
//     onPiece   optional (text, ms): each piece of the answer as it arrives (plain mode), ms since the request
//     signal    optional AbortSignal: aborting ends the request (result.error.code "aborted")
//     circleId  optional: the circle to ask a token through (POST /api/tokens `circle_id`; the tracker else picks
//               the first circle of the taster's that the rig is shared with)
//     fingerprint  optional, public-key mode: the node key fingerprint the page shows; a token naming another
//               key is refused (result.error.code "pk_key_mismatch")
//     token     optional: a previous result's `issued`. It is spent again while it has requests left (counted
//               here, in `issued.requests_sent`: the requests the rig accepted), has not expired and is of the same mode; otherwise, or if the
//               rig refuses it as used up or expired, a new token is fetched.
//   result: {ok, issued, reused, answer, chunks, chunk_timestamps, timing, usage, luckrig, error}
//     ok                true when the rig finished its answer ([DONE]) without an error
//     issued            the POST /api/tokens answer whose token was spent (null when none was got); it carries
//                       `upload_key` for sharing the timing and publishing, never sent to the rig
//     reused            true when `token` was spent again
//     answer            the answer's text ("" when none arrived)
//     chunks            the text of each piece as it arrived (one piece in public-key mode)
//     chunk_timestamps  ms from the request to each piece (the replay file's field)
//     timing            the timing object of POST /api/replay/timing (null when the rig was never reached)
//     usage, luckrig    what the rig's last chunk said (usage counts, its own luckrig object), or null / {}
//     error             null, or {code, message, status}: message is a sentence for the visitor
//   readSSE(body, onComment, onData)     reads an SSE body incrementally (onData returning true stops it)
//   reusable(issued, mode)               whether `run` would spend that token again
//   mixedContent(url, reachability)      the sentence saying why this https page cannot call that http URL, or null
//   replay(result, {prompt, system, history, createdAt}) → the replay file (schema_version 1) of a result
//   fileName(replay)                     the download name: <UTC stamp>_<node id>.json
//   shareTiming(result)                  POST /api/replay/timing with the result's upload key → {status, data, headers}
//   publish(result, replay)              POST /api/replays with the result's upload key → {status, data, headers}
"use strict";
(function () {
  const L = () => window.LuckRig;
  const t = (...a) => window.LuckRig.t(...a);
  const round = (x, n) => (x === null || x === undefined ? null : Math.round(x * 10 ** n) / 10 ** n);
  const EXPIRY_MARGIN_MS = 30_000;  // a token this close to its end is not worth a request

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

  // Browsers refuse plain-http calls from an https page. The URL is the rig's own for a direct rig and its
  // relay's for a relayed one, so the check is on the scheme alone and only the sentence differs.
  function mixedContent(url, reachability) {
    if (location.protocol !== "https:" || !/^http:/i.test(url || "")) return null;
    return t(reachability === "relayed" ? "mixed_content.relayed" : "mixed_content.direct");
  }

  function reusable(issued, mode) {
    if (!issued || !issued.token) return false;
    if ((issued.crypto_mode || "plain") !== (mode || "plain")) return false;
    const max = issued.limits && issued.limits.max_requests;
    if (max && (issued.requests_sent || 0) >= max) return false;
    const ends = Date.parse(issued.expires_at || "");
    return !(ends && ends - Date.now() < EXPIRY_MARGIN_MS);
  }

  const failure = (code, message, status) => ({ code, message, status: status || null });

  // A new token. Public-key mode: the token carries this browser's public key, so only this browser can open
  // the answer, and the key it names must be the one whose fingerprint the page shows.
  async function newToken(nodeId, mode, fingerprint, circleId) {
    const circle = circleId ? { circle_id: circleId } : {};
    if (mode === "public-key") {
      const S = window.LuckRigSubtext;
      const mine = await S.tasterKey();
      const r = await L().postJSON("/api/tokens", { node_id: nodeId, crypto_mode: "public-key", user_public_key: mine.publicPem, ...circle }, L().contributorKey());
      if (r.status !== 201) return { error: failure(r.data && r.data.code, L().explain(r.status, r.data, r.headers), r.status) };
      const fp = await S.fingerprintOfPem(r.data.node_public_key);
      if (fp !== r.data.node_public_key_fingerprint || (fingerprint && fp !== fingerprint)) return { error: failure("pk_key_mismatch", t("pk_key_mismatch")) };
      return { issued: r.data };
    }
    const r = await L().postJSON("/api/tokens", { node_id: nodeId, crypto_mode: "plain", ...circle }, L().contributorKey());
    if (r.status !== 201) return { error: failure(r.data && r.data.code, L().explain(r.status, r.data, r.headers), r.status) };
    return { issued: r.data };
  }

  // One request with one token: the stream read, the pieces timed.
  async function stream(issued, messages, params, mode, status, onPiece, signal) {
    const mine = mode === "public-key" ? await window.LuckRigSubtext.tasterKey() : null;
    const result = { ok: false, issued, answer: "", chunks: [], chunk_timestamps: [], timing: null, usage: null, luckrig: {}, error: null };
    if (!issued.node.endpoint_url) { result.error = failure("no_endpoint", t("no_endpoint")); return result; }
    const refused = mixedContent(issued.node.endpoint_url, issued.node.reachability);
    if (refused) { result.error = failure("mixed_content", refused); return result; }
    let body;
    if (mine) {
      const envelope = await window.LuckRigSubtext.sealRequest(messages, params || {}, issued.node_public_key, issued.jti, issued.node.id);
      body = { messages: [{ role: "user", content: envelope }], stream: true };
    } else {
      body = { ...(params || {}), messages, stream: true, stream_options: { include_usage: true } };
    }
    const endpoint = issued.node.endpoint_url.replace(/\/+$/, "") + "/chat/completions";
    status(t("connecting"), "connecting");
    const started = performance.now();
    let firstByte = null, firstData = null, firstToken = null, lastToken = null, lastQueue = null, sawQueue = false;
    const chunks = [], pieces = [];
    let usage = null, luckrig = {}, failed = null, finished = false, resp;
    try {
      resp = await fetch(endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Authorization": "Bearer " + issued.token, "Accept": "text/event-stream" },
        body: JSON.stringify(body),
        signal,
      });
    } catch (e) {
      result.error = signal && signal.aborted ? failure("aborted", t("aborted")) : failure("network", t("network_error"));
      return result;
    }
    if (resp.status !== 200) {
      let data = null; try { data = await resp.json(); } catch (e) { data = null; }
      const code = data && data.error && typeof data.error === "object" ? data.error.code : null;
      result.error = failure(code, L().explain(resp.status, data, resp.headers), resp.status);
      return result;
    }
    // Counted only once the rig accepted the request: a refusal it gives back (queue_full, token_busy, ...)
    // did not spend one of the token's requests, and counting it would throw the token away early.
    issued.requests_sent = (issued.requests_sent || 0) + 1;
    try {
      await readSSE(resp.body, (comment) => {
        firstByte = firstByte || performance.now();
        const m = /^queue position=(\d+) eta_sec=(\d+)/.exec(comment);
        if (m) { sawQueue = true; lastQueue = performance.now(); status(t("queued", { n: m[1], s: m[2] }), "queued"); }
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
            if (firstToken === null) { firstToken = now; status(t(mine ? "decrypting" : "generating_now"), mine ? "decrypting" : "generating"); }
            lastToken = now;
            chunks.push(round(now - started, 1));
            pieces.push(piece);
            if (!mine && onPiece) onPiece(piece, round(now - started, 1));
          }
        }
        return false;
      });
    } catch (e) {
      failed = failed || (signal && signal.aborted ? { code: "aborted" } : { message: String(e), code: "stream" });
    }
    if (failed) result.error = failed.code === "aborted" ? failure("aborted", t("aborted")) : failure(failed.code || "stream", L().explain(502, { error: failed }, null), 502);
    else if (!finished) result.error = failure("stream_cut", t("stream_cut"));

    let answer = pieces;
    if (mine && pieces.length && !failed) {
      try {
        const opened = await window.LuckRigSubtext.openResponse(pieces.join(""), mine.privateKey, issued.jti, issued.node.id);
        answer = [opened.content];
        usage = opened.usage || usage;
        luckrig = opened.luckrig || {};
        if (onPiece) onPiece(opened.content, chunks[0]);
      } catch (e) {
        result.error = failure("pk_open_failed", t("pk_open_failed", { reason: e.reason || e.message }));
        return result;
      }
    }

    const outputTokens = (usage && usage.completion_tokens) || answer.length;
    // In public-key mode the answer arrives in one piece: its rate is tokens over the time from the start of
    // generation (the last queue comment, or the request) to its arrival.
    const generationSec = firstToken === null ? 0 : mine ? (firstToken - (lastQueue || started)) / 1000 : (lastToken - firstToken) / 1000;
    const rateTokens = mine ? outputTokens : outputTokens - 1;
    result.timing = {
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
    Object.assign(result, {
      ok: !result.error, answer: answer.join(""), chunks: answer, chunk_timestamps: mine ? chunks.slice(0, 1) : chunks, usage, luckrig,
    });
    return result;
  }

  // Codes by which the rig says a reused token is spent: worth one retry with a new token.
  const SPENT = new Set(["token_exhausted", "invalid_token"]);

  async function run(opts) {
    const mode = opts.mode === "public-key" ? "public-key" : "plain";
    const status = (text, phase) => { if (opts.onStatus) opts.onStatus(text, phase); };
    const empty = { ok: false, issued: null, reused: false, answer: "", chunks: [], chunk_timestamps: [], timing: null, usage: null, luckrig: {}, error: null };
    try {
      let issued = reusable(opts.token, mode) ? opts.token : null;
      const reused = Boolean(issued);
      if (!issued) {
        status(t("getting_token"), "token");
        const got = await newToken(opts.nodeId, mode, opts.fingerprint, opts.circleId);
        if (got.error) { status(got.error.message, "error"); return { ...empty, error: got.error }; }
        issued = got.issued;
      }
      let result = await stream(issued, opts.messages, opts.params, mode, status, opts.onPiece, opts.signal);
      if (reused && result.error && SPENT.has(result.error.code)) {
        status(t("getting_token"), "token");
        const got = await newToken(opts.nodeId, mode, opts.fingerprint, opts.circleId);
        if (got.error) { status(got.error.message, "error"); return { ...empty, error: got.error }; }
        result = { ...(await stream(got.issued, opts.messages, opts.params, mode, status, opts.onPiece, opts.signal)), reused: false };
      } else result.reused = reused;
      if (result.error) status(result.error.message, "error");
      else status(result.answer ? t("done") : t("empty_answer"), "done");
      return result;
    } catch (e) {
      const error = opts.signal && opts.signal.aborted ? failure("aborted", t("aborted")) : failure("network", t("errors.unknown", { code: "network", msg: String(e) }));
      status(error.message, "error");
      return { ...empty, error };
    }
  }

  function replay(result, ctx) {
    const when = (ctx && ctx.createdAt) || new Date();
    const file = {
      schema_version: 1,
      node_id: result.issued.node.id,
      created_at: when.toISOString().replace(/\.\d{3}Z$/, "Z"),
      prompt: ctx.prompt,
      system: ctx.system || null,
      response: result.answer,
      chunk_timestamps: result.chunk_timestamps,
      chunks: result.chunks,
      timing: result.timing,
    };
    // Earlier turns of a conversation (docs/api.md, "Published replays"): left out for a single question, so
    // that a one-turn replay is exactly the file older clients write.
    if (ctx.history && ctx.history.length) file.messages = ctx.history.map((m) => ({ role: m.role, content: m.content }));
    return file;
  }

  function fileName(replayFile) {
    const p = (n) => String(n).padStart(2, "0");
    const d = new Date(replayFile.created_at);
    const stamp = d.getUTCFullYear() + "-" + p(d.getUTCMonth() + 1) + "-" + p(d.getUTCDate()) + "_" + p(d.getUTCHours()) + p(d.getUTCMinutes()) + p(d.getUTCSeconds());
    return stamp + "_" + replayFile.node_id + ".json";
  }

  function shareTiming(result) {
    const body = Object.fromEntries(Object.entries(result.timing).filter(([, v]) => v !== null));
    return L().postJSON("/api/replay/timing", body, result.issued.upload_key);
  }

  function publish(result, replayFile) {
    return L().postJSON("/api/replays", replayFile, result.issued.upload_key);
  }

  window.LuckRigTasting = { run, readSSE, reusable, mixedContent, replay, fileName, shareTiming, publish };
})();
