// The operator's page of a cluster: opened on one node, it shows every
// node of /cluster (given as further arguments, origins), each with its
// connection count and its store and Redis up.
//
// usage: node admin-cluster.mjs <base-url> <outdir> <admin-token> <origin>...
import path from "node:path";
import { launch, watchedPage, finish } from "./lib.mjs";

const [base, outdir, token, ...origins] = process.argv.slice(2);
const errors = [];
const steps = [];
const T = 20000;
const browser = await launch();
try {
  const page = await watchedPage(await browser.createBrowserContext(), errors);
  await page.setViewport({ width: 1280, height: 1000 });
  await page.goto(`${base}/admin`);
  await page.waitForSelector("#admin-token", { timeout: T });
  await page.type("#admin-token", token);
  await page.click("#admin-open");
  for (const origin of origins) {
    const card = `.node[data-origin="${origin}"]`;
    await page.waitForFunction((card) => {
      const pills = [...document.querySelectorAll(`${card} .pill`)].map((p) => p.textContent);
      return pills.includes("store: ok") && pills.includes("redis: up") && document.querySelector(`${card} .value.conn`);
    }, { timeout: T }, card);
  }
  steps.push("every node");
  await page.screenshot({ path: path.join(outdir, "admin-cluster.png") });
  finish({ steps, errors });
} catch (e) {
  console.error(e);
  finish({ steps, errors: [...errors, `failed after ${steps.at(-1) || "start"}: ${e.message}`] });
} finally {
  await browser.close().catch(() => {});
}
