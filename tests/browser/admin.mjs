// The operator's page in a real browser: a wrong Admin-Token is refused,
// the right one shows the node; its connection count rises when another
// page opens sockets (and signs one in) and falls when they close.
//
// usage: node admin.mjs <base-url> <outdir> <admin-token>
import path from "node:path";
import { launch, watchedPage, finish, uname } from "./lib.mjs";

const [base, outdir, token] = process.argv.slice(2);
const errors = [];
const steps = [];
const T = 20000;
const browser = await launch();
try {
  const page = await watchedPage(await browser.createBrowserContext(), errors);
  await page.setViewport({ width: 1280, height: 700 });
  await page.goto(`${base}/admin`);
  await page.waitForSelector("#admin-token", { timeout: T });
  await page.type("#admin-token", "not-the-token");
  await page.click("#admin-open");
  await page.waitForFunction(() => /wrong token/.test(document.querySelector(".login .error")?.textContent || ""), { timeout: T });
  steps.push("refused");
  await page.type("#admin-token", token);
  await page.click("#admin-open");
  await page.waitForSelector(".node .value.conn", { timeout: T });
  const stored = await page.evaluate(() => [sessionStorage.getItem("weim.admin"), localStorage.length]);
  if (stored[0] !== token || stored[1] !== 0) throw new Error(`token kept as ${JSON.stringify(stored)}`);
  const count = (sel) => page.$eval(sel, (e) => Number(e.textContent.replace(/,/g, "")));
  const before = await count(".node .value.conn");
  steps.push("shown");

  // Another page opens six sockets and signs one of them in.
  const otherCtx = await browser.createBrowserContext();
  const other = await watchedPage(otherCtx, errors);
  await other.goto(`${base}/sdk/weim.js`);
  await other.evaluate(async (name) => {
    const url = location.origin.replace(/^http/, "ws") + "/ws";
    window.sockets = await Promise.all(
      Array.from({ length: 5 }, () => new Promise((ok, fail) => {
        const ws = new WebSocket(url);
        ws.onopen = () => ok(ws);
        ws.onerror = fail;
      })),
    );
    const { Weim } = await import("/sdk/weim.js");
    window.client = new Weim();
    await window.client.register(name, "secret1");
    await window.client.connect();
  }, uname("ops"));
  await page.waitForFunction((n) => Number(document.querySelector(".node .value.conn").textContent) >= n, { timeout: T }, before + 6);
  await page.waitForFunction(() => Number(document.querySelector(".node .value.signed").textContent) >= 1, { timeout: T });
  const store = await page.$eval(".node .pill", (e) => e.textContent);
  if (store !== "store: ok") throw new Error(`store pill: ${store}`);
  steps.push("rose");
  await page.screenshot({ path: path.join(outdir, "admin.png") });

  // Closing the other context closes its sockets (and its keep-alive
  // HTTP connections, which count as connections too).
  await otherCtx.close();
  await page.waitForFunction((n) => Number(document.querySelector(".node .value.conn").textContent) <= n, { timeout: T }, before);
  steps.push("fell");
  finish({ steps, before, errors });
} catch (e) {
  console.error(e);
  finish({ steps, errors: [...errors, `failed after ${steps.at(-1) || "start"}: ${e.message}`] });
} finally {
  await browser.close().catch(() => {});
}
