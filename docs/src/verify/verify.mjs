#!/usr/bin/env node
// Verify a Sesame-Assertion header (an EdDSA JWT) with Node.js 18+ and no
// npm dependencies:
//
//   node verify.mjs https://app.example.com/.sesame/jwks.json https://app.example.com "$TOKEN"
//
// On success prints the claims as one line of JSON and exits 0; otherwise
// prints why to stderr and exits 1. In a web app, cache the JWKS and refetch
// it only when a token names a kid you have not seen.
import { createPublicKey, verify } from "node:crypto";

const LEEWAY_SECONDS = 30; // clock skew tolerated on exp

const decodeJson = (part) => JSON.parse(Buffer.from(part, "base64url").toString("utf8"));

async function verifyAssertion(jwksUrl, audience, token) {
  const parts = token.split(".");
  if (parts.length !== 3) throw new Error("not a compact JWS (header.payload.signature)");
  const [headerB64, payloadB64, signatureB64] = parts;

  // The algorithm is fixed here, never taken from the token.
  const header = decodeJson(headerB64);
  if (header.alg !== "EdDSA") throw new Error(`alg is ${header.alg}, not EdDSA`);
  if (typeof header.kid !== "string") throw new Error("the token has no kid");

  // Fetch the JWKS and pick the key the token names.
  const res = await fetch(jwksUrl);
  if (!res.ok) throw new Error(`JWKS fetch: HTTP ${res.status}`);
  const { keys = [] } = await res.json();
  const jwk = keys.find((k) => k.kid === header.kid);
  if (!jwk) throw new Error(`no key ${header.kid} in the JWKS`);
  if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519") throw new Error("the key is not Ed25519");
  const key = createPublicKey({ key: jwk, format: "jwk" });

  // Ed25519 signs the ASCII text "header.payload"; the digest argument is null.
  const signingInput = Buffer.from(`${headerB64}.${payloadB64}`);
  if (!verify(null, signingInput, key, Buffer.from(signatureB64, "base64url"))) {
    throw new Error("bad signature");
  }

  // Only now trust the claims. Sesame sets iss and aud to the site's URL.
  const claims = decodeJson(payloadB64);
  if (claims.iss !== audience) throw new Error(`iss is ${claims.iss}, not ${audience}`);
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!aud.includes(audience)) throw new Error(`aud ${JSON.stringify(claims.aud)} lacks ${audience}`);
  const now = Math.floor(Date.now() / 1000);
  if (typeof claims.exp !== "number") throw new Error("the token has no exp");
  if (claims.exp + LEEWAY_SECONDS <= now) throw new Error("the token has expired");
  return claims;
}

const [jwksUrl, audience, token] = process.argv.slice(2);
if (process.argv.length !== 5) {
  console.error("usage: verify.mjs JWKS_URL AUDIENCE TOKEN");
  process.exit(1);
}
try {
  console.log(JSON.stringify(await verifyAssertion(jwksUrl, audience, token)));
} catch (e) {
  // fetch() hides the network error (refused, DNS, TLS...) in e.cause.
  console.error(`invalid assertion: ${e.message}${e.cause ? `: ${e.cause.message}` : ""}`);
  process.exit(1);
}
