// Opens the admin listener's status page in headless Chromium, reads its tables, waits for the
// page to reload itself, and saves a screenshot. Prints one JSON object with what it saw; the
// pytest test asserts on it.
//
//   node status.mjs http://127.0.0.1:ADMIN_PORT SCREENSHOT.png [TOKEN]
import { chromium } from "playwright-core";

const [url, screenshot, token] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const rows = (page, id) =>
  page.$$eval(`#${id} tr`, (trs) => trs.slice(1).map((tr) => [...tr.cells].map((td) => td.innerText.trim())));
const result = {};
try {
  const credentials = token ? { httpCredentials: { username: "admin", password: token } } : {};
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 }, ...credentials });
  const page = await context.newPage();
  const first = await page.goto(`${url}/`);
  result.status = first.status();
  result.title = await page.title();
  result.node = await page.textContent("#node");
  result.servers = await rows(page, "servers");
  result.databases = await rows(page, "databases");
  result.logins = await rows(page, "logins");
  await page.screenshot({ path: screenshot, fullPage: true });
  // The page reloads itself (no script of its own): wait for the next load.
  const reloaded = await page.waitForEvent("load", { timeout: 15000 }).then(() => true, () => false);
  result.reloaded = reloaded;
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
