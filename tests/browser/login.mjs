// Logs in through mailfront's form in headless Chromium, lands on the calendar (Radicale's web
// page through mailfront), then shows that a second node sharing the cookie key accepts the same
// cookie. Prints one JSON object with what it saw; the pytest test asserts on it.
//
//   node login.mjs https://127.0.0.1:PORT_A https://127.0.0.1:PORT_B USER PASSWORD
import { chromium } from "playwright-core";

const [nodeA, nodeB, user, password] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const result = {};
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  await page.goto(`${nodeA}/calendar/`);
  result.loginUrl = page.url();
  await page.fill("#user", user);
  await page.fill("#password", password);
  await Promise.all([page.waitForURL(/\/calendar\/\.web/), page.click("button[type=submit]")]);
  result.landedOn = page.url();
  result.title = await page.title();
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "mailfront_session");
  result.cookie = session ? { httpOnly: session.httpOnly, secure: session.secure, sameSite: session.sameSite } : null;

  // The same cookie, presented to the other node (no login there).
  const other = await browser.newContext({ ignoreHTTPSErrors: true });
  const hostB = new URL(nodeB).hostname;
  await other.addCookies([{ name: session.name, value: session.value, domain: hostB, path: "/", secure: true, httpOnly: true }]);
  const pageB = await other.newPage();
  await pageB.goto(`${nodeB}/calendar/`);
  result.nodeBUrl = pageB.url();
  result.nodeBTitle = await pageB.title();
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
