// The subtext codec of public-key mode in the browser, as specified in shared/SUBTEXT.md and implemented for
// Python in node_agent/subtext.py: the same bytes for the same inputs (tests/vectors/subtext.json is run here too).
//
// An envelope is X25519 (a fresh ephemeral key) + HKDF-SHA256 (salt, info "luckrig-subtext-v1") + AES-256-GCM
// with AAD "luckrig-subtext-v1|<direction>|<jti>|<node_id>", carried in chat text as Unicode variation
// selectors after a short visible cover text. The taster's private key is a non-extractable WebCrypto key kept
// in IndexedDB: script can use it, never read it. This keeps the prompt out of proxies, logs and the tracker;
// the rig decrypts it, so its operator can read it. `seal` and `open` are the codec's verbs for encrypting to a
// recipient's key and decrypting, as in HPKE (RFC 9180); what a person reads says "public-key mode", "encrypted".
"use strict";
(function () {
  const INFO = new TextEncoder().encode("luckrig-subtext-v1");
  const ALG = "X25519-HKDF-SHA256-A256GCM";
  const MAGIC = [0x4c, 0x52, 0x53, 0x31]; // "LRS1"
  const KEYS = ["v", "alg", "epk", "salt", "iv", "ct"];
  const MAX_ENVELOPE = 8 * 1024 * 1024;
  const REQUEST_COVER = "luckrig encrypted prompt";
  const RESPONSE_COVER = "luckrig encrypted response";
  const SEL = "[\\uFE00-\\uFE0F\\u{E0100}-\\u{E01EF}]";
  const RUN = new RegExp(SEL + "*", "uy");
  const LONG_RUN = new RegExp(SEL + "{4,}", "u");

  class SubtextError extends Error {
    constructor(reason, message) { super(message); this.code = "invalid_subtext"; this.reason = reason; }
  }

  // --- carrying bytes in text ---------------------------------------------------------------------------------
  function bytesToSelectors(bytes) {
    const parts = new Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i];
      parts[i] = String.fromCodePoint(b < 16 ? 0xfe00 + b : 0xe0100 + (b - 16));
    }
    return parts.join("");
  }
  function selectorsToBytes(text) {
    const out = [];
    for (const ch of text) {
      const cp = ch.codePointAt(0);
      out.push(cp <= 0xfe0f ? cp - 0xfe00 : cp - 0xe0100 + 16);
    }
    return Uint8Array.from(out);
  }
  const MAGIC_TEXT = bytesToSelectors(MAGIC);

  function encodeMessage(envelopeBytes, cover) {
    const n = envelopeBytes.length;
    const header = [...MAGIC, (n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
    return (cover || REQUEST_COVER) + bytesToSelectors(header) + bytesToSelectors(envelopeBytes);
  }

  function containsSubtext(text) { return text.includes(MAGIC_TEXT) || LONG_RUN.test(text); }

  // The envelope bytes carried in text, with the same rules (and error reasons) as node_agent.subtext.
  function findAndDecode(text) {
    const start = text.indexOf(MAGIC_TEXT);
    if (start < 0) {
      if (LONG_RUN.test(text)) throw new SubtextError("bad_magic", "a variation-selector run that does not start with LRS1");
      throw new SubtextError("no_subtext", "no subtext message (LRS1) in the text");
    }
    RUN.lastIndex = start;
    const run = RUN.exec(text)[0];
    const end = start + run.length;
    const bytes = selectorsToBytes(run);
    const short = (what) => end === text.length
      ? new SubtextError("truncated", "the subtext ends inside the " + what)
      : new SubtextError("interrupted", "a non-selector character interrupts the subtext " + what);
    if (bytes.length < 8) throw short("length header");
    const length = ((bytes[4] << 24) >>> 0) + (bytes[5] << 16) + (bytes[6] << 8) + bytes[7];
    if (!(length > 0 && length <= MAX_ENVELOPE)) throw new SubtextError("bad_length", "declared envelope length " + length + " is out of range");
    if (bytes.length < 8 + length) throw short("envelope");
    if (bytes.length > 8 + length) throw new SubtextError("trailing_selectors", "the selector run is longer than its declared length");
    if (text.indexOf(MAGIC_TEXT, end) >= 0) throw new SubtextError("multiple", "more than one subtext message in the text");
    return bytes.slice(8);
  }

  // --- base64url, strict: unpadded, url alphabet, canonical ---------------------------------------------------
  const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  function b64url(bytes) {
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function b64urlDecode(value, field) {
    if (typeof value !== "string" || !/^[A-Za-z0-9_-]*$/.test(value) || value.length % 4 === 1) {
      throw new SubtextError("bad_envelope", "envelope " + field + " is not unpadded base64url");
    }
    const unused = { 0: 0, 2: 0b1111, 3: 0b11 }[value.length % 4];
    if (value && (B64.indexOf(value[value.length - 1]) & unused)) {
      throw new SubtextError("bad_envelope", "envelope " + field + " is not canonical base64url");
    }
    const bin = atob(value.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (value.length % 4)) % 4));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  }
  const hex = (h) => Uint8Array.from((h.match(/../g) || []).map((x) => parseInt(x, 16)));
  const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

  function aad(direction, jti, nodeId) {
    if (direction !== "request" && direction !== "response") throw new Error("direction must be request or response");
    if (String(jti).includes("|") || String(nodeId).includes("|")) throw new Error("jti and node_id must not contain |");
    return new TextEncoder().encode("luckrig-subtext-v1|" + direction + "|" + jti + "|" + nodeId);
  }

  // --- keys -----------------------------------------------------------------------------------------------
  function pemToDer(pem) {
    const body = pem.replace(/-----(BEGIN|END) [^-]+-----/g, "").replace(/\s+/g, "");
    return Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
  }
  function derToPem(der, label) {
    const b64 = btoa(String.fromCharCode(...new Uint8Array(der)));
    return "-----BEGIN " + label + "-----\n" + b64.match(/.{1,64}/g).join("\n") + "\n-----END " + label + "-----\n";
  }
  const importPublicPem = (pem) => crypto.subtle.importKey("spki", pemToDer(pem), { name: "X25519" }, true, []);

  // sha256: + b64url-nopad(SHA-256(SPKI DER)), as the tracker computes it.
  async function fingerprintOfPem(pem) {
    return "sha256:" + b64url(new Uint8Array(await crypto.subtle.digest("SHA-256", pemToDer(pem))));
  }

  async function deriveAesKey(privateKey, publicKey, salt, usage) {
    let shared;
    try { shared = await crypto.subtle.deriveBits({ name: "X25519", public: publicKey }, privateKey, 256); }
    catch (e) { throw new SubtextError("bad_key", "the envelope's ephemeral key is unusable"); }
    const hkdf = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveKey"]);
    return crypto.subtle.deriveKey({ name: "HKDF", hash: "SHA-256", salt, info: INFO }, hkdf,
      { name: "AES-GCM", length: 256 }, false, [usage]);
  }

  // --- envelopes --------------------------------------------------------------------------------------------
  // opts: {direction, jti, node_id, ephemeralJwk?, salt?, iv?} (the last three only for the fixed test vectors)
  async function seal(plaintext, recipientPublicKey, opts) {
    const additional = aad(opts.direction, opts.jti, opts.node_id);
    let ephPrivate, ephPublicRaw;
    if (opts.ephemeralJwk) {
      ephPrivate = await crypto.subtle.importKey("jwk", opts.ephemeralJwk, { name: "X25519" }, false, ["deriveBits"]);
      ephPublicRaw = b64urlDecode(opts.ephemeralJwk.x, "x");
    } else {
      const pair = await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
      ephPrivate = pair.privateKey;
      ephPublicRaw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
    }
    const salt = opts.salt || crypto.getRandomValues(new Uint8Array(16));
    const iv = opts.iv || crypto.getRandomValues(new Uint8Array(12));
    const key = await deriveAesKey(ephPrivate, recipientPublicKey, salt, "encrypt");
    const ct = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: additional, tagLength: 128 }, key, plaintext));
    return { v: 1, alg: ALG, epk: b64url(ephPublicRaw), salt: b64url(salt), iv: b64url(iv), ct: b64url(ct) };
  }
  const envelopeBytes = (env) => new TextEncoder().encode(JSON.stringify(Object.fromEntries(KEYS.map((k) => [k, env[k]]))));

  function parseEnvelope(bytes) {
    let env;
    try { env = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes)); }
    catch (e) { throw new SubtextError("bad_json", "the envelope is not UTF-8 JSON"); }
    if (!env || typeof env !== "object" || Array.isArray(env)) throw new SubtextError("bad_json", "the envelope is not a JSON object");
    return env;
  }
  function validateEnvelope(env) {
    const keys = Object.keys(env);
    if (keys.length !== KEYS.length || !KEYS.every((k) => keys.includes(k))) {
      throw new SubtextError("bad_envelope", "the envelope must have exactly the keys " + KEYS.join(", "));
    }
    if (env.v !== 1) throw new SubtextError("bad_envelope", "unsupported envelope version");
    if (env.alg !== ALG) throw new SubtextError("bad_envelope", "unsupported envelope algorithm");
    const f = {};
    for (const name of ["epk", "salt", "iv", "ct"]) f[name] = b64urlDecode(env[name], name);
    for (const [name, size] of [["epk", 32], ["salt", 16], ["iv", 12]]) {
      if (f[name].length !== size) throw new SubtextError("bad_envelope", "envelope " + name + " must be " + size + " bytes");
    }
    if (f.ct.length < 16) throw new SubtextError("bad_envelope", "envelope ct is shorter than the 16-byte tag");
    return f;
  }
  async function openEnvelope(env, privateKey, opts) {
    const additional = aad(opts.direction, opts.jti, opts.node_id);
    const f = validateEnvelope(env instanceof Uint8Array ? parseEnvelope(env) : env);
    let epk;
    try { epk = await crypto.subtle.importKey("raw", f.epk, { name: "X25519" }, true, []); }
    catch (e) { throw new SubtextError("bad_key", "the envelope's ephemeral key is unusable"); }
    const key = await deriveAesKey(privateKey, epk, f.salt, "decrypt");
    try { return new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: f.iv, additionalData: additional, tagLength: 128 }, key, f.ct)); }
    catch (e) { throw new SubtextError("decrypt_failed", "the envelope does not open with this key, token and node"); }
  }

  // --- requests and responses ------------------------------------------------------------------------------
  async function sealRequest(messages, params, nodePublicPem, jti, nodeId) {
    const plaintext = new TextEncoder().encode(JSON.stringify({ messages, params }));
    const env = await seal(plaintext, await importPublicPem(nodePublicPem), { direction: "request", jti, node_id: nodeId });
    return encodeMessage(envelopeBytes(env), REQUEST_COVER);
  }
  function loadsPlaintext(bytes) {
    try { return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes)); }
    catch (e) { throw new SubtextError("bad_plaintext", "the decrypted text is not UTF-8 JSON"); }
  }
  function checkResponse(obj) {
    const want = ["content", "finish_reason", "usage", "luckrig", "moderation"];
    const keys = obj && typeof obj === "object" ? Object.keys(obj) : [];
    const bad = (m) => new SubtextError("bad_plaintext", "subtext response: " + m);
    if (keys.length !== want.length || !want.every((k) => keys.includes(k))) throw bad("must have exactly " + want.join(", "));
    if (typeof obj.content !== "string") throw bad("content must be a string");
    if (obj.finish_reason !== null && typeof obj.finish_reason !== "string") throw bad("finish_reason must be a string or null");
    for (const k of ["usage", "luckrig", "moderation"]) if (!obj[k] || typeof obj[k] !== "object" || Array.isArray(obj[k])) throw bad(k + " must be an object");
    return obj;
  }
  async function openResponse(content, userPrivateKey, jti, nodeId) {
    const bytes = findAndDecode(content);
    return checkResponse(loadsPlaintext(await openEnvelope(parseEnvelope(bytes), userPrivateKey, { direction: "response", jti, node_id: nodeId })));
  }

  // --- the taster's key pair, kept in IndexedDB ------------------------------------------------------------
  function idb() {
    return new Promise((resolve, reject) => {
      const req = indexedDB.open("luckrig", 1);
      req.onupgradeneeded = () => req.result.createObjectStore("keys");
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }
  async function idbDo(mode, fn) {
    const db = await idb();
    return new Promise((resolve, reject) => {
      const tx = db.transaction("keys", mode);
      const req = fn(tx.objectStore("keys"));
      tx.oncomplete = () => { db.close(); resolve(req.result); };
      tx.onerror = () => { db.close(); reject(tx.error); };
    });
  }
  // {privateKey (non-extractable), publicPem, fingerprint}: made once per browser, reused.
  async function tasterKey() {
    let stored = await idbDo("readonly", (s) => s.get("taster-x25519"));
    if (!stored) {
      const pair = await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
      const publicPem = derToPem(await crypto.subtle.exportKey("spki", pair.publicKey), "PUBLIC KEY");
      stored = { privateKey: pair.privateKey, publicPem };
      await idbDo("readwrite", (s) => s.put(stored, "taster-x25519"));
    }
    return { ...stored, fingerprint: await fingerprintOfPem(stored.publicPem) };
  }

  window.LuckRigSubtext = {
    SubtextError, REQUEST_COVER, RESPONSE_COVER, bytesToSelectors, selectorsToBytes, encodeMessage, containsSubtext,
    findAndDecode, b64url, b64urlDecode, hex, toHex, aad, seal, envelopeBytes, parseEnvelope, validateEnvelope,
    openEnvelope, sealRequest, openResponse, importPublicPem, fingerprintOfPem, tasterKey,
  };
})();
