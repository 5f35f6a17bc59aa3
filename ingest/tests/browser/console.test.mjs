// The ops console in a real headless browser (Debian's chromium through playwright-core):
// enter the token once, search a payment reference, replay its dead event, see the status
// change; then a genuine GoCardless delivery payhook cannot read shows up under Rejected, its
// body can be read, and Reparse says it is still rejected; a member is forgotten after a
// confirmation and her name and email disappear; last, a bank credit whose reference the
// matching rule could not place is counted on its stat tile and listed as unmatched under
// "Bank credits waiting for a payment", a match to a payment that does not exist shows the
// API's error and changes nothing, and a match to its payment (confirmed) turns it matched
// with that payment's id and takes it off the count. Run by run.sh, which starts ingest
// with a seeded database and sets:
//   CONSOLE_URL    http://127.0.0.1:<ops port>/admin/
//   ADMIN_TOKEN    the PAYHOOK_ADMIN_TOKEN ingest runs with
//   REFERENCE      a payment reference with a dead event
//   DEAD_EVENT_ID  payhook's id of that event
//   BANK_CREDIT_ID   payhook's id of an unmatched bank credit (the only one waiting)
//   BANK_PAYMENT_ID  the id of the pending payment it pays (INV-BANK-1, same amount)
//   WEBHOOK_URL    ingest's GoCardless webhook route
//   GOCARDLESS_SECRET  the GOCARDLESS_WEBHOOK_SECRET ingest runs with (a test value)
//   SCREENSHOT     where to save the screenshot (a test artifact)
//   CHROMIUM       the browser (default /usr/bin/chromium)
import { createHmac } from "node:crypto";
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
const bankCreditId = env("BANK_CREDIT_ID");
const bankPaymentId = env("BANK_PAYMENT_ID");
const webhookUrl = env("WEBHOOK_URL");
const gocardlessSecret = env("GOCARDLESS_SECRET");
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

  step = "a genuine GoCardless body payhook cannot read is answered 400, and so is its resend";
  // Signed with the right secret, but its event has none of the fields an event must have.
  const unreadable = '{"events":[{"id":"EVBROWSER1"}],"meta":{"webhook_id":"WBBROWSER1"}}';
  const signature = createHmac("sha256", gocardlessSecret).update(unreadable).digest("hex");
  let refusal = "";
  for (let i = 0; i < 2; i++) {
    const r = await fetch(webhookUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Webhook-Signature": signature },
      body: unreadable,
    });
    check(r.status === 400, `the unreadable body was answered ${r.status}, not 400`);
    refusal = (await r.json()).error;
  }
  check(typeof refusal === "string" && refusal.length > 0, "the 400 says what is wrong");

  step = "it is listed under Rejected, once, with the reason the gateway was given";
  await page.locator("#refresh").click();
  const rejected = page.locator("#rejected tbody tr[data-rejected-id]");
  await rejected.first().waitFor();
  check((await rejected.count()) === 1, `one row for the body and its resend (${await rejected.count()})`);
  const kept = rejected.first();
  const keptId = await kept.getAttribute("data-rejected-id");
  check((await kept.locator(".provider").innerText()).trim() === "gocardless", "from gocardless");
  const reason = (await kept.locator(".reason").innerText()).trim();
  check(reason === refusal, `its reason is the 400's error: ${reason} / ${refusal}`);
  check((await kept.locator(".attempts").innerText()).trim() === "2", "the resend is a second attempt");
  check((await kept.locator(".first-seen").innerText()).trim() !== "", "when it was first seen");
  check((await kept.locator(".badge").innerText()).trim() === "waiting", "it waits for a reparse");
  await page.waitForFunction(() => document.querySelector('#stats [data-status="rejected"] .n')?.textContent === "1");

  step = "view its body";
  await kept.locator(".view-body").click();
  const body = page.locator("#rejected tr.body-row pre.body");
  await body.waitFor();
  check((await body.innerText()) === unreadable, `the body is shown as it was sent: ${await body.innerText()}`);

  step = "press Reparse: still rejected by this version";
  await kept.locator("button.reparse").click();
  await page.waitForFunction(
    (id) => document.querySelector("#message")?.textContent.includes(`rejected delivery ${id} reparsed: still rejected`),
    keptId,
  );
  check((await page.locator("#message").innerText()).includes(refusal), "the message gives the reason");
  const after = page.locator(`#rejected tbody tr[data-rejected-id="${keptId}"]`);
  check((await after.locator(".badge").innerText()).trim() === "waiting", "it still waits for a reparse");
  check(await after.locator("button.reparse").isEnabled(), "it can be reparsed again after an upgrade");
  check((await page.locator('#stats [data-status="rejected"] .n').innerText()) === "1", "still counted");

  step = "forget a member: confirm, then her name and email are gone";
  await page.locator("#q").fill("MD0001");
  await page.locator("#search").click();
  const member = page.locator("#members tbody tr").first();
  await member.waitFor();
  check((await member.innerText()).includes("Ada Lovelace"), "the member is found with her name");
  let asked = "";
  page.once("dialog", (d) => { asked = d.message(); d.accept(); });
  await member.locator("button.forget").click();
  await page.waitForFunction(() => /member \d+ erased/.test(document.querySelector("#message")?.textContent ?? ""));
  check(asked.includes("cannot be undone"), `the operator is asked first: ${asked}`);
  await page.waitForFunction(() => !(document.querySelector("#members tbody tr")?.textContent ?? "Ada").includes("Ada"));
  check(!(await page.locator("#members tbody tr").first().innerText()).includes("ada@example.org"), "her email is gone");

  step = "a bank credit waits for its payment: counted on its tile, listed as unmatched";
  const bankCount = () => document.querySelector('#stats [data-status="bank_waiting"] .n')?.textContent;
  await page.waitForFunction(bankCount, undefined);
  check((await page.evaluate(bankCount)) === "1", `one bank credit waiting (${await page.evaluate(bankCount)})`);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.locator('#stats [data-status="bank_waiting"]').click();
  await page.waitForFunction(() => {
    const r = document.querySelector("#bank-card").getBoundingClientRect();
    return r.top >= 0 && r.top < window.innerHeight;
  });
  check((await page.locator("#bank-status").inputValue()) === "waiting", "the card shows the credits waiting");
  const credit = page.locator(`#bank tbody tr[data-bank-id="${bankCreditId}"]`);
  await credit.waitFor();
  check((await credit.locator(".status").innerText()).trim() === "unmatched", "the credit is unmatched");
  check((await credit.locator(".amount").innerText()).trim() === "42.00 GBP", `its amount in pounds: ${await credit.locator(".amount").innerText()}`);
  check((await credit.locator(".reference").innerText()).trim() === "Payment for inv bank 1 typo", "its remittance text");
  check((await credit.locator(".counterparty").innerText()).trim() === "A Payer", "who paid");
  check(/^\d{4}-\d{2}-\d{2}$/.test((await credit.locator(".booked-on").innerText()).trim()), "when it was booked");
  check((await credit.locator(".payment").innerText()).trim() === "", "no payment yet");

  step = "a match to a payment that does not exist shows the API's error";
  const noSuchPayment = String(Number(bankPaymentId) + 1_000_000);
  let askedWrong = "";
  page.once("dialog", (d) => { askedWrong = d.message(); d.accept(); });
  await credit.locator("input.payment-id").fill(noSuchPayment);
  await credit.locator("button.match").click();
  await page.waitForFunction(
    (id) => document.querySelector("#message")?.textContent.includes(`no payment ${id}`),
    noSuchPayment,
  );
  check(askedWrong.includes(`bank credit ${bankCreditId}`) && askedWrong.includes(`payment ${noSuchPayment}`),
    `the operator is asked first: ${askedWrong}`);
  check((await page.locator("#message").getAttribute("class")) === "error", "shown as an error");
  check((await credit.locator(".status").innerText()).trim() === "unmatched", "still unmatched");
  check(await credit.locator("button.match").isEnabled(), "it can be matched again");
  check((await page.evaluate(bankCount)) === "1", "still counted");

  step = "match it to its payment: confirmed, then matched with that payment and no longer counted";
  let askedRight = "";
  page.once("dialog", (d) => { askedRight = d.message(); d.accept(); });
  await credit.locator("input.payment-id").fill(bankPaymentId);
  await credit.locator("button.match").click();
  await page.waitForFunction(
    ([c, p]) => document.querySelector("#message")?.textContent.includes(`bank credit ${c} matched to payment ${p}`),
    [bankCreditId, bankPaymentId],
  );
  check(askedRight.includes(`payment ${bankPaymentId}`) && askedRight.includes("42.00 GBP"),
    `the operator is asked first, with the amount: ${askedRight}`);
  check((await page.locator("#message").innerText()).includes("INV-BANK-1"), "the message names the payment");
  await page.waitForFunction(() => document.querySelector('#stats [data-status="bank_waiting"] .n')?.textContent === "0");
  await page.waitForFunction(
    (id) => !document.querySelector(`#bank tbody tr[data-bank-id="${id}"]`),
    bankCreditId,
  );
  check((await page.locator("#bank tbody").innerText()).includes("no bank credits waiting"), "nothing waits any more");
  await page.locator("#bank-status").selectOption("matched");
  const matched = page.locator(`#bank tbody tr[data-bank-id="${bankCreditId}"]`);
  await matched.waitFor();
  check((await matched.locator(".status").innerText()).trim() === "matched", "listed as matched");
  check((await matched.locator(".payment").innerText()).trim() === bankPaymentId, "with the payment's id");
  check((await matched.locator("button.match").count()) === 0, "and no Match button");
  const detail = await (await fetch(new URL(`/admin/bank-transactions/${bankCreditId}`, url), {
    headers: { Authorization: `Bearer ${token}` },
  })).json();
  check(detail.match_status === "matched" && String(detail.payment_id) === bankPaymentId
    && detail.payment && !["pending", "submitted"].includes(detail.payment.status),
    `the API agrees, and the payment is no longer expected: ${JSON.stringify(detail)}`);

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
