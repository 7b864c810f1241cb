// "Sign in with your phone" in headless Chromium: a phone (an Android
// Chrome User-Agent, a phone-sized screen, cookies of its own) signs in by
// email; a laptop (desktop Firefox's User-Agent) chooses "Sign in with your
// phone" and shows a QR code; the phone reads it off the laptop's screen
// (jsQR on a screenshot, as a camera would), opens it, picks the laptop's
// number, and the laptop continues into the app by itself.
//
// Prints "approval-to-arrival-ms: N": from the phone's click on the number
// to the laptop's page loaded in the app.
//
// Env: SITE, MAIL_API, EMAIL, SHOTS, CHROMIUM.
import { laptopAndPhone, launch, latestLink, step } from "./lib.mjs";
import jsQR from "jsqr";
import { PNG } from "pngjs";

const site = process.env.SITE;
const email = process.env.EMAIL;
const shots = process.env.SHOTS || ".";

const browser = await launch();
let laptop, phone;
try {
  const { laptop: laptopContext, phone: phoneContext } = await laptopAndPhone(browser);
  laptop = await laptopContext.newPage();
  phone = await phoneContext.newPage();

  step("the phone signs in by email");
  await phone.goto(`${site}/.sesame/login`);
  await phone.fill("#email", email);
  await phone.click("#login-form button[type=submit]");
  await phone.waitForSelector(".number");
  await phone.goto(await latestLink(email));
  await phone.waitForURL(`${site}/`);

  step("the laptop chooses 'Sign in with your phone': a QR code, a code and a number");
  await laptop.goto(`${site}/dashboard`);
  await laptop.waitForURL(/\/\.sesame\/login/);
  await laptop.click("#phone-signin");
  await laptop.waitForSelector(".qr svg");
  const code = (await laptop.textContent(".user-code")).trim();
  const number = (await laptop.textContent(".number")).trim();
  if (!/^[A-Z]{4}-[A-Z]{4}$/.test(code)) throw new Error(`not a code: ${code}`);
  await laptop.screenshot({ path: `${shots}/phone-laptop.png` });

  step("the phone reads the QR code off the laptop's screen");
  const shot = PNG.sync.read(await laptop.locator(".qr").screenshot());
  const read = jsQR(new Uint8ClampedArray(shot.data), shot.width, shot.height);
  if (!read) throw new Error("the QR code does not read");
  const url = new URL(read.data);
  if (url.origin !== new URL(site).origin || url.pathname !== "/.sesame/device" ||
      url.searchParams.get("code") !== code) {
    throw new Error(`the QR code says ${read.data}`);
  }

  step("the phone opens it, sees who asked, and types the laptop's number");
  await phone.goto(read.data);
  const body = await phone.textContent("body");
  for (const shown of ["Firefox on Linux", "127.0.0.x", email]) {
    if (!body.includes(shown)) throw new Error(`the phone's page lacks "${shown}": ${body}`);
  }
  await phone.fill("#number", number);
  await phone.screenshot({ path: `${shots}/phone-approve.png`, fullPage: true });
  const clicked = performance.now();
  const arrived = laptop.waitForURL(`${site}/dashboard`, { timeout: 30000 });
  await phone.click("#approve");
  await arrived;
  await laptop.waitForSelector("text=upstream saw /dashboard");
  console.log(`approval-to-arrival-ms: ${(performance.now() - clicked).toFixed(0)}`);
  if (!(await phone.textContent("body")).includes("Sign-in approved")) {
    throw new Error("the phone was not told the sign-in was approved");
  }
  step("done");
} catch (e) {
  for (const [name, page] of [["laptop", laptop], ["phone", phone]]) {
    if (page) await page.screenshot({ path: `${shots}/phone-failure-${name}.png` }).catch(() => {});
  }
  throw e;
} finally {
  await browser.close();
}
