// A person in headless Chromium with a passkey-capable device (the DevTools
// virtual authenticator: resident keys, user verification): signs in by
// email link (read from the test's SMTP sink through MAIL_API), adds a
// passkey when offered, signs out, and signs back in with the
// "Sign in with a passkey" button, ending on the app.
//
// Env: SESAME_BASE (http://localhost:PORT), MAIL_API (URL returning the
// latest sign-in link for ?to=EMAIL), EMAIL, SHOTS (folder for screenshots).
import { launch, latestLink, step } from "./lib.mjs";

const base = process.env.SESAME_BASE;
const email = process.env.EMAIL;
const shots = process.env.SHOTS || ".";

const browser = await launch();
let page;
try {
  const context = await browser.newContext();
  // Record the page's WebAuthn Signal API calls (kept across navigations).
  await context.addInitScript(() => {
    const P = window.PublicKeyCredential;
    if (!P) return;
    for (const name of ["signalUnknownCredential", "signalAllAcceptedCredentials", "signalCurrentUserDetails"]) {
      const orig = P[name];
      if (typeof orig !== "function") continue;
      P[name] = function (arg) {
        const all = JSON.parse(sessionStorage.getItem("signals") || "[]");
        all.push({ name, arg });
        sessionStorage.setItem("signals", JSON.stringify(all));
        return orig.call(P, arg);
      };
    }
  });
  page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId: authenticator } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2", transport: "internal", hasResidentKey: true,
      hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
    },
  });

  step("open the app: sent to the login page");
  await page.goto(`${base}/welcome`);
  if (!page.url().includes("/.sesame/login")) throw new Error(`not on the login page: ${page.url()}`);
  await page.screenshot({ path: `${shots}/login.png` });
  await page.fill("#email", email);
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("text=Check your email");

  step("follow the emailed link in the same browser");
  const link = await latestLink(email);
  await page.goto(link);
  // The confirm page continues by itself here; after it, the passkey offer.
  await page.waitForURL(/\/\.sesame\/passkey\/offer/);
  await page.screenshot({ path: `${shots}/offer.png` });

  step("add a passkey");
  await page.click("#passkey-add");
  await page.waitForURL(`${base}/welcome`);

  step("check the passkey on the account page");
  await page.goto(`${base}/.sesame/account`);
  await page.waitForSelector("#passkeys li");
  await page.screenshot({ path: `${shots}/account.png` });

  step("sign out: the login page signs in again through autofill (conditional mediation)");
  // The virtual authenticator answers the autofill request at once, as if
  // the person had picked their passkey in the email field's suggestions.
  await page.click("form[action='/.sesame/logout'] button");
  await page.waitForURL(`${base}/`);
  if (!(await page.textContent("body")).includes("upstream saw /")) throw new Error("autofill did not reach the app");

  step("sign out, then sign in with the passkey button");
  // Without autofill from here on (the virtual authenticator would answer
  // it at once, even on the login page shown after signing out), so that
  // the button does it.
  await page.addInitScript(() => {
    if (window.PublicKeyCredential) {
      PublicKeyCredential.isConditionalMediationAvailable = () => Promise.resolve(false);
    }
  });
  await page.goto(`${base}/.sesame/account`);
  await page.click("form[action='/.sesame/logout'] button");
  await page.waitForURL(/\/\.sesame\/login/);
  await page.goto(`${base}/.sesame/login?rd=${encodeURIComponent(base + "/back")}`);
  await page.click("#passkey-signin");
  await page.waitForURL(`${base}/back`);
  const body = await page.textContent("body");
  if (!body.includes("upstream saw /back")) throw new Error(`not the app: ${body}`);

  const signals = () => page.evaluate(() => JSON.parse(sessionStorage.getItem("signals") || "[]"));
  const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId: authenticator });
  if (credentials.length !== 1) throw new Error(`expected one credential, got ${credentials.length}`);
  const credentialId = credentials[0].credentialId.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

  step("the account page tells the browser which passkeys are still good (Signal API)");
  await page.goto(`${base}/.sesame/account`);
  await page.waitForFunction(() => JSON.parse(sessionStorage.getItem("signals") || "[]")
    .some((s) => s.name === "signalCurrentUserDetails"));
  const accepted = (await signals()).filter((s) => s.name === "signalAllAcceptedCredentials").pop();
  if (!accepted || accepted.arg.allAcceptedCredentialIds.join() !== credentialId) {
    throw new Error(`signalAllAcceptedCredentials: ${JSON.stringify(accepted)} (credential ${credentialId})`);
  }
  const details = (await signals()).filter((s) => s.name === "signalCurrentUserDetails").pop();
  if (details.arg.name !== email || details.arg.userId !== accepted.arg.userId) {
    throw new Error(`signalCurrentUserDetails: ${JSON.stringify(details)}`);
  }

  step("delete the passkey (just signed in with it: no further proof), then try it: the browser is told to forget it");
  page.once("dialog", (d) => d.accept());
  await page.click("[data-delete]");
  await page.waitForFunction(() => !document.querySelector("[data-delete]"));
  await page.click("form[action='/.sesame/logout'] button");
  await page.waitForURL(/\/\.sesame\/login/);
  await page.click("#passkey-signin");
  await page.waitForFunction(() => JSON.parse(sessionStorage.getItem("signals") || "[]")
    .some((s) => s.name === "signalUnknownCredential"));
  const unknown = (await signals()).filter((s) => s.name === "signalUnknownCredential").pop();
  if (unknown.arg.credentialId !== credentialId) throw new Error(`signalUnknownCredential: ${JSON.stringify(unknown)}`);
  if (!page.url().includes("/.sesame/login")) throw new Error(`signed in with a deleted passkey: ${page.url()}`);
  step("done");
} catch (e) {
  if (page) {
    await page.screenshot({ path: `${shots}/failure.png` }).catch(() => {});
    console.error(`at ${page.url()}: ${(await page.textContent("body").catch(() => "")).slice(0, 500)}`);
  }
  console.error(`browser test failed: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
