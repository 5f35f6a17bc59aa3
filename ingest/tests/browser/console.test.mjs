// The ops console in a real headless browser (Debian's chromium through playwright-core):
// enter the token once, search a payment reference, replay its dead event, see the status
// change. Run by run.sh, which starts ingest with a seeded database and sets:
//   CONSOLE_URL    http://127.0.0.1:<ops port>/admin/
//   ADMIN_TOKEN    the PAYHOOK_ADMIN_TOKEN ingest runs with
//   REFERENCE      a payment reference with a dead event
//   DEAD_EVENT_ID  payhook's id of that event
//   SCREENSHOT     where to save the screenshot (a test artifact)
//   CHROMIUM       the browser (default /usr/bin/chromium)
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set (run this through run.sh)`);
  return v;
};
const url = env("CONSOLE_URL");
const token = env("ADMIN_TOKEN");
const reference = env("REFERENCE");
const deadId = env("DEAD_EVENT_ID");
const screenshot = env("SCREENSHOT");
const executablePath = env("CHROMIUM", "/usr/bin/chromium");

const TIMEOUT = 15_000;
let step = "launch";
const check = (cond, what) => { if (!cond) throw new Error(what); };

const profile = mkdtempSync(join(tmpdir(), "payhook-console-"));
// A persistent context is how playwright takes an explicit, fresh --user-data-dir.
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  viewport: { width: 1360, height: 900 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  timeout: 60_000,
});
const pageErrors = [];
let failed = false;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  page.on("pageerror", (e) => pageErrors.push(String(e)));

  step = "load the page";
  const res = await page.goto(url);
  check(res && res.status() === 200, `GET ${url} answered ${res && res.status()}`);
  check((await page.title()).includes("payhook"), "the page is the ops console");

  step = "enter the token";
  await page.locator("#token").fill(token);
  await page.locator("#token-save").click();
  await page.locator("#token-set").waitFor({ state: "visible" });
  const dead = page.locator('#stats [data-status="dead"] .n');
  await dead.waitFor();
  await page.waitForFunction(() => document.querySelector('#stats [data-status="dead"] .n')?.textContent === "1");

  step = "the token is kept for the tab";
  await page.reload();
  await page.locator("#token-set").waitFor({ state: "visible" });
  check(await page.locator("#token-form").isHidden(), "no token form after a reload");
  await dead.waitFor();

  step = `search ${reference}`;
  await page.locator("#q").fill(reference);
  await page.locator("#search").click();
  await page.locator("#payments tbody tr").first().waitFor();
  const paymentRow = await page.locator("#payments tbody tr").first().innerText();
  check(paymentRow.includes(reference), `the payment row shows ${reference}: ${paymentRow}`);
  const row = page.locator(`#events tbody tr[data-event-id="${deadId}"]`);
  await row.waitFor();
  const status = row.locator(".status");
  check((await status.innerText()).trim() === "dead", `event ${deadId} shows dead`);
  check((await row.innerText()).includes("HTTP 404"), "its last error is shown");
  const timeline = await page.locator("#events tbody tr").count();
  check(timeline >= 2, `the payment's timeline has its events (${timeline})`);

  step = "press replay";
  await row.locator("button.replay").click();
  await page.waitForFunction(
    (id) => document.querySelector(`#events tbody tr[data-event-id="${id}"] .status`)?.textContent === "published",
    deadId,
  );
  await page.waitForFunction(
    (id) => document.querySelector("#message")?.textContent.includes(`event ${id} replayed: now published`),
    deadId,
  );
  await page.waitForFunction(() => document.querySelector('#stats [data-status="dead"] .n')?.textContent === "0");
  check(await page.locator("#replay-dead").isDisabled(), "nothing dead left to replay");
  check((await row.locator(".attempts").innerText()).trim() === "0", "attempts start over");

  step = "screenshot";
  await page.screenshot({ path: screenshot, fullPage: true });
  check(pageErrors.length === 0, `no script errors: ${pageErrors.join("; ")}`);
  console.log(`console test: 1 passed, 0 failed (screenshot: ${screenshot})`);
} catch (e) {
  failed = true;
  console.error(`console test failed at "${step}": ${e.message}`);
  if (pageErrors.length) console.error(`script errors: ${pageErrors.join("; ")}`);
  try {
    const page = context.pages()[0];
    if (page) await page.screenshot({ path: screenshot.replace(/\.png$/, "-failed.png"), fullPage: true });
  } catch (_) { /* best effort */ }
  console.log("console test: 0 passed, 1 failed");
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
