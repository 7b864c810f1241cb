// A program signing in with the device grant (RFC 8628) through panva's
// openid-client (an OpenID-certified library): it asks for a code, prints
// what it would show the person (one JSON line), polls the token endpoint
// until they approve on a signed-in device, and prints the ID token's
// claims and the userinfo address (one JSON line).
//
// Env: ISSUER, CLIENT_ID.
import * as client from "openid-client";

const config = await client.discovery(
  new URL(process.env.ISSUER),
  process.env.CLIENT_ID,
  undefined,
  client.None(),
  { execute: [client.allowInsecureRequests] },
);
const asked = await client.initiateDeviceAuthorization(config, { scope: "openid email" });
console.log(JSON.stringify(asked));
try {
  const tokens = await client.pollDeviceAuthorizationGrant(config, asked);
  const claims = tokens.claims();
  const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  console.log(JSON.stringify({ ...claims, userinfo_email: info.email }));
} catch (e) {
  console.log(JSON.stringify({ error: e.error || String(e) }));
}
