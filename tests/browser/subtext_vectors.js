// Runs tests/vectors/subtext.json through showcase/static/showcase/subtext.js (in the page); returns failures.
async (v) => {
  const S = window.LuckRigSubtext;
  const failures = [];
  const priv = async (who) => crypto.subtle.importKey("jwk", v.keys[who].private_jwk, {name: "X25519"}, false, ["deriveBits"]);
  const pub = async (who) => S.importPublicPem(v.keys[who].public_spki_pem);
  const check = (name, got, want) => { if (got !== want) failures.push(name + ": got " + String(got).slice(0, 120) + " want " + String(want).slice(0, 120)); };

  for (const who of ["node", "taster"]) check("fingerprint " + who, await S.fingerprintOfPem(v.keys[who].public_spki_pem), v.keys[who].fingerprint);
  for (const c of v.codec) {
    check("codec " + c.name, S.bytesToSelectors(S.hex(c.bytes_hex)), c.selectors);
    check("codec back " + c.name, S.toHex(S.selectorsToBytes(c.selectors)), c.bytes_hex);
  }
  for (const p of v.positive) {
    const opts = {direction: p.direction, jti: p.jti, node_id: p.node_id, ephemeralJwk: p.ephemeral_private_jwk,
                  salt: S.hex(p.salt_hex), iv: S.hex(p.iv_hex)};
    const env = await S.seal(S.hex(p.plaintext_hex), await pub(p.recipient), opts);
    const bytes = S.envelopeBytes(env);
    check("envelope " + p.name, new TextDecoder().decode(bytes), p.expected.envelope_json);
    const content = S.encodeMessage(bytes, p.expected.cover);
    check("content " + p.name, content, p.expected.content);
    const carried = S.findAndDecode(p.expected.content);
    check("decode " + p.name, S.toHex(carried), S.toHex(new TextEncoder().encode(p.expected.envelope_json)));
    const opened = await S.openEnvelope(S.parseEnvelope(carried), await priv(p.recipient), opts);
    check("open " + p.name, S.toHex(opened), p.plaintext_hex);
    if (p.kind === "response") {
      const r = await S.openResponse(p.expected.content, await priv("taster"), p.jti, p.node_id);
      check("open_response " + p.name, JSON.stringify(r), JSON.stringify(p.response));
    }
  }
  let negatives = 0;
  for (const n of v.negative) {
    let reason = "no error";
    try {
      if (n.operation === "decode") S.findAndDecode(n.content);
      else if (n.operation === "open_envelope") await S.openEnvelope(S.hex(n.envelope_hex), await priv(n.recipient), n);
      else if (n.operation === "open_response") await S.openResponse(n.content, await priv(n.recipient), n.jti, n.node_id);
      else continue;  // open_request: the agent's side; the browser never opens requests
    } catch (e) { reason = (e.code || "?") + "/" + (e.reason || e.message); }
    negatives++;
    check("negative " + n.name, reason, n.expected_error.code + "/" + n.expected_error.reason);
  }
  for (const c of v.contains_subtext) check("contains " + JSON.stringify(c.text).slice(0, 30), S.containsSubtext(c.text), c.expected);
  return {failures, negatives, positives: v.positive.length};
}
