#!/usr/bin/env node
// Signs or verifies one webhook payload with a provider's official npm library, for the Go
// integration tests (internal/testkit/node.go), so that the Go verifiers are checked against
// code this project did not write.
//
// Reads one JSON request on stdin:
//   {"op": "sign" | "verify", "lib": "standardwebhooks" | "svix" | "stripe" | "github",
//    "secret": "...", "body": "<base64 of the exact bytes>", "id": "...", "timestamp": <unix s>,
//    "headers": {"lowercase-name": "value", ...}  (verify only),
//    "now": <unix s, 0 = the real clock>           (verify only)}
// and writes one JSON answer on stdout:
//   sign:   {"headers": {"Name": "value", ...}}
//   verify: {"ok": true} or {"ok": false, "error": "why"}
// A malformed request or an unusable payload is reported on stderr with exit status 2.
// Nothing this script prints contains the secret.
"use strict";

class UsageError extends Error {}

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    process.stdin.on("data", (c) => chunks.push(c));
    process.stdin.on("end", () => resolve(Buffer.concat(chunks)));
    process.stdin.on("error", reject);
  });
}

// Every library here takes the payload as a JavaScript string and hashes its UTF-8 encoding.
// Only a body that is valid UTF-8 survives that round trip byte for byte; refuse the others
// rather than sign different bytes than the Go side sends.
function payloadString(body, lib) {
  let s;
  try {
    s = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(body);
  } catch {
    throw new UsageError(`${lib} takes the payload as a string: the body is not valid UTF-8, so its exact bytes cannot be signed`);
  }
  if (!Buffer.from(s, "utf8").equals(body)) {
    throw new UsageError(`${lib}: the body does not survive a UTF-8 round trip`);
  }
  return s;
}

// withClock runs fn with Date.now() answering `now` (unix seconds), when now is set: the
// Standard Webhooks library checks the timestamp against Date.now() and has no other hook.
function withClock(now, fn) {
  if (!now) return fn();
  const real = Date.now;
  Date.now = () => now * 1000;
  try {
    return fn();
  } finally {
    Date.now = real;
  }
}

function header(headers, name) {
  const v = headers[name];
  if (typeof v !== "string" || v === "") throw new UsageError(`missing header ${name}`);
  return v;
}

const libs = {
  standardwebhooks: {
    load: () => require("standardwebhooks"),
    sign(m, req, payload) {
      const sig = new m.Webhook(req.secret).sign(req.id, new Date(req.timestamp * 1000), payload);
      return {
        "webhook-id": req.id,
        "webhook-timestamp": String(req.timestamp),
        "webhook-signature": sig,
      };
    },
    verify(m, req, payload) {
      withClock(req.now, () => new m.Webhook(req.secret).verify(payload, req.headers));
    },
  },
  svix: {
    load: () => require("svix"),
    sign(m, req, payload) {
      const sig = new m.Webhook(req.secret).sign(req.id, new Date(req.timestamp * 1000), payload);
      return {
        "svix-id": req.id,
        "svix-timestamp": String(req.timestamp),
        "svix-signature": sig,
      };
    },
    verify(m, req, payload) {
      withClock(req.now, () => new m.Webhook(req.secret).verify(payload, req.headers));
    },
  },
  stripe: {
    load: () => require("stripe"),
    sign(Stripe, req, payload) {
      const value = Stripe.webhooks.generateTestHeaderString({
        payload,
        secret: req.secret,
        timestamp: req.timestamp,
      });
      return { "Stripe-Signature": value };
    },
    verify(Stripe, req, payload) {
      const sig = header(req.headers, "stripe-signature");
      const receivedAt = req.now ? req.now * 1000 : undefined;
      const tolerance = Stripe.webhooks.DEFAULT_TOLERANCE;
      let json = true;
      try {
        JSON.parse(payload);
      } catch {
        json = false;
      }
      if (json) {
        Stripe.webhooks.constructEvent(payload, sig, req.secret, tolerance, undefined, receivedAt);
      } else {
        // constructEvent parses the payload as JSON after verifying it; for other bodies use
        // the verification step alone.
        Stripe.webhooks.signature.verifyHeader(payload, sig, req.secret, tolerance, undefined, receivedAt);
      }
    },
  },
  github: {
    load: () => import("@octokit/webhooks-methods"),
    async sign(m, req, payload) {
      return {
        "X-Hub-Signature-256": await m.sign(req.secret, payload),
        "X-GitHub-Delivery": req.id,
      };
    },
    async verify(m, req, payload) {
      const ok = await m.verify(req.secret, payload, header(req.headers, "x-hub-signature-256"));
      if (!ok) throw new Error("signature does not match");
    },
  },
};

// scrub removes the secret, and the key part of a "whsec_" secret, from text.
function scrub(text, secret) {
  text = String(text);
  for (const s of [secret, secret.startsWith("whsec_") ? secret.slice(6) : ""]) {
    if (s.length >= 4) text = text.split(s).join("[secret]");
  }
  return text;
}

// The request's secret, kept for scrubbing whatever is printed.
let secret = "";

async function main() {
  let req;
  try {
    req = JSON.parse((await readStdin()).toString("utf8"));
  } catch {
    throw new UsageError("the request on stdin is not JSON");
  }
  if (!req || typeof req !== "object") throw new UsageError("the request must be a JSON object");
  if (typeof req.secret === "string") secret = req.secret;
  const lib = libs[req.lib];
  if (!lib) throw new UsageError(`unknown lib ${JSON.stringify(req.lib)}`);
  if (typeof req.secret !== "string" || req.secret === "") throw new UsageError("missing secret");
  if (typeof req.body !== "string") throw new UsageError("missing body");
  const body = Buffer.from(req.body, "base64");
  const payload = payloadString(body, req.lib);
  const m = await lib.load();
  switch (req.op) {
    case "sign":
      if (typeof req.id !== "string" || !Number.isInteger(req.timestamp) || req.timestamp <= 0) {
        throw new UsageError("sign needs a string id and a positive integer timestamp");
      }
      return { headers: await lib.sign(m, req, payload) };
    case "verify":
      req.headers = req.headers || {};
      try {
        await lib.verify(m, req, payload);
        return { ok: true };
      } catch (e) {
        if (e instanceof UsageError) return { ok: false, error: e.message };
        return { ok: false, error: `${e.name || "Error"}: ${e.message}` };
      }
    default:
      throw new UsageError(`unknown op ${JSON.stringify(req.op)}`);
  }
}

main()
  .then((answer) => {
    process.stdout.write(scrub(JSON.stringify(answer), secret) + "\n");
  })
  .catch((e) => {
    const what = e instanceof UsageError ? e.message : `${e.name || "Error"}: ${e.message}`;
    process.stderr.write(scrub(what, secret) + "\n");
    process.exitCode = 2;
  });
