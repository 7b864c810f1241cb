// The portal in headless Chromium: an app on one host (SITE, wiki.localhost)
// sends the person to the portal on another (PORTAL, localhost) to sign in
// by email, they add a passkey there when offered, and land back in the app
// with a session of its own; signed out at the site and at the portal, they
// come back with the passkey, through the portal, without typing anything.
//
// Env: SITE, PORTAL, MAIL_API, EMAIL, SHOTS, CHROMIUM.
import { launch, latestLink, step } from "./lib.mjs";

const site = process.env.SITE;
const portal = process.env.PORTAL;
const email = process.env.EMAIL;
const shots = process.env.SHOTS || ".";

const browser = await launch();
let page;
try {
  const context = await browser.newContext();
  page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2", transport: "internal", hasResidentKey: true,
      hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
    },
  });
  // No autofill sign-in: the steps below press the buttons themselves.
  await context.addInitScript(() => {
    if (window.PublicKeyCredential) {
      PublicKeyCredential.isConditionalMediationAvailable = () => Promise.resolve(false);
    }
  });

  step("open the app: sent to the portal's login page");
  await page.goto(`${site}/welcome`);
  if (!page.url().startsWith(`${portal}/.sesame/login`)) throw new Error(`not on the portal: ${page.url()}`);
  await page.screenshot({ path: `${shots}/portal-login.png` });
  await page.fill("#email", email);
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("text=Check your email");

  step("follow the emailed link (the portal's) in the same browser; add a passkey on the portal");
  const link = await latestLink(email);
  if (!link.startsWith(`${portal}/`)) throw new Error(`the link is not the portal's: ${link}`);
  await page.goto(link);
  await page.waitForURL(/\/\.sesame\/passkey\/offer/);
  if (!page.url().startsWith(portal)) throw new Error(`offer not on the portal: ${page.url()}`);
  await page.click("#passkey-add");

  step("handed off to the app, with a session of its own");
  await page.waitForURL(`${site}/welcome`);
  if (!(await page.textContent("body")).includes("upstream saw /welcome")) throw new Error("not the app");
  const siteCookies = (await context.cookies(site)).map((c) => `${c.name}@${c.domain}`);
  if (!siteCookies.some((c) => c.startsWith("sesame@wiki.localhost"))) throw new Error(`no site session: ${siteCookies}`);

  step("sign out at the app: the portal's account page says who is still signed in there");
  await page.evaluate(() => {
    const f = document.createElement("form");
    f.method = "post";
    f.action = "/.sesame/logout";
    document.body.appendChild(f);
    f.submit();
  });
  await page.waitForURL(`${portal}/.sesame/account`);
  await page.waitForSelector("#passkeys li");
  await page.screenshot({ path: `${shots}/portal-account.png` });

  step("sign out at the portal, then back to the app: the passkey, on the portal");
  await page.click("form[action='/.sesame/logout'] button");
  await page.waitForURL(/\/\.sesame\/login/);
  await page.goto(`${site}/back`);
  if (!page.url().startsWith(`${portal}/.sesame/login`)) throw new Error(`not on the portal: ${page.url()}`);
  await page.click("#passkey-signin");
  await page.waitForURL(`${site}/back`);
  const body = await page.textContent("body");
  if (!body.includes("upstream saw /back")) throw new Error(`not the app: ${body}`);
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
