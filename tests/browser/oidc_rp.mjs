// A relying party built on openid-client (panva's certified OpenID Connect
// RP library), against Sesame's provider. It prints the authorization URL,
// reads back the URL the browser was sent to (the test signs the person in
// meanwhile), then redeems the code with PKCE, state and nonce checked,
// reads userinfo, refreshes, revokes, and builds the end-session URL.
// Prints one JSON line of what it found.
//
// Env: ISSUER, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI.
import * as client from "openid-client";
import * as readline from "node:readline";

const lines = readline.createInterface({ input: process.stdin });
const nextLine = () => new Promise((res) => lines.once("line", res));

const config = await client.discovery(
  new URL(process.env.ISSUER),
  process.env.CLIENT_ID,
  process.env.CLIENT_SECRET,
  undefined,
  { execute: [client.allowInsecureRequests] },
);
const redirect_uri = process.env.REDIRECT_URI;
const verifier = client.randomPKCECodeVerifier();
const state = client.randomState();
const nonce = client.randomNonce();
const url = client.buildAuthorizationUrl(config, {
  redirect_uri,
  scope: "openid email profile offline_access",
  code_challenge: await client.calculatePKCECodeChallenge(verifier),
  code_challenge_method: "S256",
  state,
  nonce,
});
console.log(url.href);

const callback = new URL(await nextLine());
const tokens = await client.authorizationCodeGrant(config, callback, {
  pkceCodeVerifier: verifier,
  expectedState: state,
  expectedNonce: nonce,
  idTokenExpected: true,
});
const claims = tokens.claims();
const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
await client.tokenRevocation(config, refreshed.refresh_token);
let afterRevocation = "still works";
try {
  await client.refreshTokenGrant(config, refreshed.refresh_token);
} catch (e) {
  afterRevocation = e.error || String(e);
}
const endSession = client.buildEndSessionUrl(config, {
  id_token_hint: tokens.id_token,
  post_logout_redirect_uri: "http://localhost:9/logged-out",
});
console.log(JSON.stringify({
  sub: claims.sub,
  email: claims.email,
  iss: claims.iss,
  aud: claims.aud,
  userinfo_email: info.email,
  refreshed: Boolean(refreshed.access_token && refreshed.refresh_token !== tokens.refresh_token),
  after_revocation: afterRevocation,
  end_session: endSession.href,
}));
lines.close();
