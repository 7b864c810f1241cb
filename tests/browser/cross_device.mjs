// Cross-device sign-in in headless Chromium: a laptop (desktop Firefox's
// User-Agent) asks for a link; the phone (an Android Chrome User-Agent, a
// phone-sized screen, cookies of its own) opens the emailed link, sees who
// asked, chooses "Approve sign-in on the other device" and picks the
// laptop's number; the laptop's "check your email" page continues into the
// app by itself. A second request is cancelled with "This wasn't me" and
// the laptop's page says so.
//
// Prints "approval-to-arrival-ms: N": from the phone's click on the number
// to the laptop's page loaded in the app.
//
// Env: SITE, MAIL_API, EMAIL, SHOTS, CHROMIUM.
import { laptopAndPhone, launch, latestLink, step } from "./lib.mjs";

const site = process.env.SITE;
const email = process.env.EMAIL;
const shots = process.env.SHOTS || ".";

const browser = await launch();
let laptop, phone;
try {
  const { laptop: laptopContext, phone: phoneContext } = await laptopAndPhone(browser);
  laptop = await laptopContext.newPage();
  phone = await phoneContext.newPage();

  step("the laptop opens the app and asks for a link");
  await laptop.goto(`${site}/dashboard`);
  await laptop.waitForURL(/\/\.sesame\/login/);
  await laptop.fill("#email", email);
  await laptop.click("#login-form button[type=submit]");
  await laptop.waitForSelector(".number");
  const number = (await laptop.textContent(".number")).trim();
  if (!/^[1-9][0-9]$/.test(number)) throw new Error(`not a two-digit number: ${number}`);
  await laptop.screenshot({ path: `${shots}/cross-device-laptop.png` });

  step("the phone opens the emailed link: who asked, and is asked for the number");
  const link = await latestLink(email);
  await phone.goto(link);
  const body = await phone.textContent("body");
  for (const shown of ["Firefox on Linux", "127.0.0.x", "just now", "Sign in on this device"]) {
    if (!body.includes(shown)) throw new Error(`the phone's page lacks "${shown}": ${body}`);
  }
  await phone.click("details.approve summary");
  await phone.fill("#number", number);
  await phone.screenshot({ path: `${shots}/cross-device-phone.png`, fullPage: true });

  step("the phone types the laptop's number; the laptop continues into the app");
  const clicked = performance.now();
  const arrived = laptop.waitForURL(`${site}/dashboard`, { timeout: 30000 });
  await phone.click("#approve");
  await arrived;
  await laptop.waitForSelector("text=upstream saw /dashboard");
  console.log(`approval-to-arrival-ms: ${(performance.now() - clicked).toFixed(0)}`);
  if (!(await phone.textContent("body")).includes("Sign-in approved")) {
    throw new Error("the phone was not told the sign-in was approved");
  }
  await phone.screenshot({ path: `${shots}/cross-device-approved.png` });
  const phoneCookies = (await phoneContext.cookies(site)).map((c) => c.name);
  if (phoneCookies.includes("sesame")) throw new Error("the phone got a session");
  const laptopCookies = (await laptopContext.cookies(site)).map((c) => c.name);
  if (!laptopCookies.includes("sesame")) throw new Error(`no session on the laptop: ${laptopCookies}`);

  step("signed out, the laptop asks again; the phone says it wasn't them");
  await laptop.evaluate(() => {
    const f = document.createElement("form");
    f.method = "post";
    f.action = "/.sesame/logout";
    document.body.appendChild(f);
    f.submit();
  });
  await laptop.waitForURL(/\/\.sesame\/login/);
  await laptop.fill("#email", email);
  await laptop.click("#login-form button[type=submit]");
  await laptop.waitForSelector(".number");
  await phone.goto(await latestLink(email, link));
  await phone.click("text=This wasn't me");
  await phone.waitForSelector("text=Nobody was signed in");
  await laptop.waitForSelector("#wait-status[role=alert]");
  const said = await laptop.textContent("#wait-status");
  if (!said.includes("cancelled")) throw new Error(`the laptop says: ${said}`);
  await laptop.screenshot({ path: `${shots}/cross-device-cancelled.png` });
  step("done");
} catch (e) {
  for (const [name, page] of [["laptop", laptop], ["phone", phone]]) {
    if (page) await page.screenshot({ path: `${shots}/cross-device-failure-${name}.png` }).catch(() => {});
  }
  throw e;
} finally {
  await browser.close();
}
