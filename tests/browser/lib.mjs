// What the browser scripts share: the Chromium they launch, their step
// lines, the sign-in link out of the test's SMTP sink, and the two
// devices of the cross-device scripts.
import { chromium } from "playwright-core";

export const step = (what) => console.log(`step: ${what}`);

/// Headless Debian Chromium, with nothing reaching out to the internet.
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
    ],
  });
}

/// The newest sign-in link mailed to `email` (other than `before`), from
/// MAIL_API (the test's SMTP sink): polled for up to 10 s.
export async function latestLink(email, before = "") {
  const mailApi = process.env.MAIL_API;
  for (let i = 0; i < 200; i++) {
    const r = await fetch(`${mailApi}?to=${encodeURIComponent(email)}`);
    if (r.ok) {
      const link = (await r.text()).trim();
      if (link && link !== before) return link;
    }
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error("no sign-in mail arrived");
}

/// A laptop (desktop Firefox's User-Agent) and a phone (Android Chrome's,
/// a phone-sized screen), each with cookies of its own.
export async function laptopAndPhone(browser) {
  const laptop = await browser.newContext({
    userAgent: "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    viewport: { width: 1024, height: 900 },
  });
  const phone = await browser.newContext({
    userAgent: "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 " +
      "(KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36",
    viewport: { width: 390, height: 760 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2,
  });
  return { laptop, phone };
}
