// node_receiver.js: a receiver for croupier's webhooks with Node.js's standard library only
// (node:http and node:crypto; Node.js 18 or newer). It verifies every dialect by hand,
// drops duplicate deliveries in memory, and prints one line per request:
//   accepted <type> <id> attempt=<n> <data>  |  duplicate <id>  |  refused <status>: <why>
//
//   CROUPIER_WEBHOOK_SECRET=whsec_... PORT=9000 node examples/node_receiver.js
//
// Environment:
//   CROUPIER_WEBHOOK_SECRET  (required) the endpoint's secret; the whpk_ public key for
//                            ed25519. During a rotation: the old and the new, space-separated.
//   CROUPIER_WEBHOOK_DIALECT standard (default), ed25519, hmac-hex or bearer.
//   CROUPIER_WEBHOOK_HEADER_PREFIX  hmac-hex only: the {Prefix} of X-{Prefix}-Signature.
//   PORT (default 9000), HOST (default 127.0.0.1).
//
// The verify functions below are the ones docs/dialects/*.md show, character for character;
// croupier's tests run those against requests signed by croupier itself.
"use strict";

const { createHash, createHmac, createPublicKey, timingSafeEqual, verify } = require("node:crypto");
const { createServer } = require("node:http");

const TOLERANCE_S = 5 * 60;
const MAX_BODY_BYTES = 8 * 1024 * 1024;
// Keep handled ids for 7 days: past croupier's default retry schedule (about 41 hours).
const DEDUPE_TTL_MS = 7 * 24 * 60 * 60 * 1000;

class InvalidWebhook extends Error {}

// Standard Webhooks v1 (the standard dialect). Returns the parsed body if the request is
// authentic, throws InvalidWebhook if not. headers: req.headers; body: the raw Buffer.
function verifyStandard(secrets, headers, body) {
  const id = headers["webhook-id"];
  const timestamp = headers["webhook-timestamp"];
  const signatures = headers["webhook-signature"];
  if (!id || !timestamp || !signatures) {
    throw new InvalidWebhook("missing webhook-id, webhook-timestamp or webhook-signature");
  }
  if (!/^[0-9]{1,12}$/.test(timestamp) || Math.abs(Date.now() / 1000 - Number(timestamp)) > TOLERANCE_S) {
    throw new InvalidWebhook("webhook-timestamp is not within 5 minutes of now");
  }
  const signed = Buffer.concat([Buffer.from(`${id}.${timestamp}.`), body]);
  const expected = secrets.map((secret) =>
    createHmac("sha256", Buffer.from(secret.replace(/^whsec_/, ""), "base64"))
      .update(signed)
      .digest(),
  );
  for (const entry of signatures.split(" ")) {
    const [version, value] = entry.split(",", 2);
    if (version !== "v1" || !value) continue;
    const given = Buffer.from(value, "base64");
    // timingSafeEqual needs equal lengths; a length says nothing about the secret.
    if (expected.some((e) => e.length === given.length && timingSafeEqual(e, given))) {
      return JSON.parse(body.toString("utf8"));
    }
  }
  throw new InvalidWebhook("no v1 signature in webhook-signature matches");
}

// Standard Webhooks v1a (the ed25519 dialect), checked with the endpoint's whpk_ public keys.
function verifyEd25519(publicKeys, headers, body) {
  const id = headers["webhook-id"];
  const timestamp = headers["webhook-timestamp"];
  const signatures = headers["webhook-signature"];
  if (!id || !timestamp || !signatures) {
    throw new InvalidWebhook("missing webhook-id, webhook-timestamp or webhook-signature");
  }
  if (!/^[0-9]{1,12}$/.test(timestamp) || Math.abs(Date.now() / 1000 - Number(timestamp)) > TOLERANCE_S) {
    throw new InvalidWebhook("webhook-timestamp is not within 5 minutes of now");
  }
  const signed = Buffer.concat([Buffer.from(`${id}.${timestamp}.`), body]);
  const keys = publicKeys.map((key) => {
    const raw = Buffer.from(key.replace(/^whpk_/, ""), "base64");
    const jwk = { kty: "OKP", crv: "Ed25519", x: raw.toString("base64url") };
    return createPublicKey({ key: jwk, format: "jwk" });
  });
  for (const entry of signatures.split(" ")) {
    const [version, value] = entry.split(",", 2);
    if (version !== "v1a" || !value) continue;
    const given = Buffer.from(value, "base64");
    if (given.length === 64 && keys.some((key) => verify(null, signed, key, given))) {
      return JSON.parse(body.toString("utf8"));
    }
  }
  throw new InvalidWebhook("no v1a signature in webhook-signature matches");
}

// The hmac-hex dialect: X-{Prefix}-Signature: sha256=<hex> over "{timestamp}.{body}", keyed
// with the secret string's own bytes (not base64-decoded, whsec_ prefix and all).
function verifyHmacHex(secrets, headers, body, prefix = "Croupier") {
  const signatures = headers[`x-${prefix.toLowerCase()}-signature`];
  const timestamp = headers[`x-${prefix.toLowerCase()}-timestamp`];
  if (!signatures || !timestamp) {
    throw new InvalidWebhook(`missing X-${prefix}-Signature or X-${prefix}-Timestamp`);
  }
  if (!/^[0-9]{1,12}$/.test(timestamp) || Math.abs(Date.now() / 1000 - Number(timestamp)) > TOLERANCE_S) {
    throw new InvalidWebhook(`X-${prefix}-Timestamp is not within 5 minutes of now`);
  }
  const signed = Buffer.concat([Buffer.from(`${timestamp}.`), body]);
  const expected = secrets.map((secret) =>
    createHmac("sha256", Buffer.from(secret, "utf8")).update(signed).digest(),
  );
  for (const entry of signatures.split(",")) {
    const [algorithm, value] = entry.trim().split("=", 2);
    if (algorithm !== "sha256" || !/^[0-9a-fA-F]{64}$/.test(value ?? "")) continue;
    const given = Buffer.from(value, "hex");
    if (expected.some((e) => timingSafeEqual(e, given))) {
      return JSON.parse(body.toString("utf8"));
    }
  }
  throw new InvalidWebhook(`no sha256 signature in X-${prefix}-Signature matches`);
}

// The bearer dialect: Authorization: Bearer <key>. No signature and no timestamp.
function verifyBearer(keys, headers, body) {
  const [scheme, token] = (headers["authorization"] ?? "").split(" ", 2);
  if (scheme.toLowerCase() !== "bearer" || !token) {
    throw new InvalidWebhook("Authorization is not a Bearer token");
  }
  // Digests have one length, so the comparison time says nothing about the key's length.
  const digest = createHash("sha256").update(token).digest();
  let matched = false;
  for (const key of keys) {
    matched = timingSafeEqual(createHash("sha256").update(key).digest(), digest) || matched;
  }
  if (!matched) throw new InvalidWebhook("bearer token matches no configured key");
  return JSON.parse(body.toString("utf8"));
}

const VERIFIERS = {
  standard: verifyStandard,
  ed25519: verifyEd25519,
  "hmac-hex": verifyHmacHex,
  bearer: verifyBearer,
};

// The event inside a verified body: an envelope (id, type, data) or the flat data format
// (the event's fields plus event_type; its id is webhook-id).
function readEvent(body, headers) {
  if (body && typeof body.id === "string" && typeof body.type === "string" && body.data) {
    if (headers["webhook-id"] && headers["webhook-id"] !== body.id) {
      throw new InvalidWebhook("webhook-id does not match the envelope id");
    }
    return { id: body.id, type: body.type, attempt: body.meta?.attempt ?? null, data: body.data };
  }
  if (body && typeof body.event_type === "string" && headers["webhook-id"]) {
    const { event_type: type, ...data } = body;
    return { id: headers["webhook-id"], type, attempt: null, data };
  }
  throw new InvalidWebhook("body is neither an envelope nor the data format");
}

// In memory: lost on restart and not shared between processes. Use a table with a unique
// key on the id (or Redis SET NX) when either matters.
const seen = new Map(); // event id -> expiry (ms)

function claim(id) {
  const now = Date.now();
  for (const [key, expiry] of seen) {
    if (expiry > now) break; // insertion order is expiry order: the rest are younger
    seen.delete(key);
  }
  if (seen.has(id)) return false;
  seen.set(id, now + DEDUPE_TTL_MS);
  return true;
}

function answer(res, status, body, headers = {}) {
  res.writeHead(status, { "Content-Type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

function main() {
  const secrets = (process.env.CROUPIER_WEBHOOK_SECRET ?? "").split(/\s+/).filter(Boolean);
  const dialect = process.env.CROUPIER_WEBHOOK_DIALECT || "standard";
  const prefix = process.env.CROUPIER_WEBHOOK_HEADER_PREFIX || "Croupier";
  const port = Number.parseInt(process.env.PORT || "9000", 10);
  const host = process.env.HOST || "127.0.0.1";
  const check = VERIFIERS[dialect];
  if (secrets.length === 0) throw new Error("set CROUPIER_WEBHOOK_SECRET to the endpoint's secret");
  if (!check) throw new Error(`CROUPIER_WEBHOOK_DIALECT must be one of ${Object.keys(VERIFIERS)}`);
  const refusal = dialect === "bearer" ? 401 : 400;

  const server = createServer((req, res) => {
    if (req.method !== "POST" || req.url.split("?")[0] !== "/webhooks") {
      answer(res, 404, { error: "not_found" });
      return;
    }
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) req.destroy();
      else chunks.push(chunk);
    });
    req.on("end", () => {
      // The raw bytes, never re-serialised JSON: the signature covers the bytes.
      const raw = Buffer.concat(chunks);
      let event;
      try {
        event = readEvent(check(secrets, req.headers, raw, prefix), req.headers);
      } catch (err) {
        // SyntaxError: authentic, but the body is not JSON.
        const why = err instanceof InvalidWebhook || err instanceof SyntaxError;
        if (!why) throw err;
        console.log(`refused ${refusal}: ${err.message}`);
        const headers = refusal === 401 ? { "WWW-Authenticate": "Bearer" } : {};
        answer(res, refusal, { error: "verification", message: err.message }, headers);
        return;
      }
      if (!claim(event.id)) {
        console.log(`duplicate ${event.id}`);
        answer(res, 200, { duplicate: true, id: event.id });
        return;
      }
      // Store or enqueue the event here, and answer fast. If that fails, seen.delete(event.id)
      // and answer 500, so croupier's retry is handled rather than taken for a duplicate.
      console.log(`accepted ${event.type} ${event.id} attempt=${event.attempt} ${JSON.stringify(event.data)}`);
      answer(res, 200, { ok: true });
    });
  });
  server.listen(port, host, () => {
    console.log(`listening on http://${host}:${port}/webhooks (${dialect})`);
  });
  // Stop at once: croupier retries whatever was cut short.
  for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(0));
}

main();
