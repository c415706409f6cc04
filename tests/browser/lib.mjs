// Shared by the browser tests: a headless Chromium (Debian's, or
// $CHROMIUM) driven over the DevTools protocol by puppeteer-core, loaded
// from $WEIM_BROWSER_MODULES (scripts/test.sh installs it there).
import { createRequire } from "node:module";
import path from "node:path";

const modules = process.env.WEIM_BROWSER_MODULES;
if (!modules) throw new Error("WEIM_BROWSER_MODULES is not set");
const require = createRequire(path.join(modules, "package.json"));
const puppeteer = require("puppeteer-core");

/** Launches Chromium headless. */
export async function launch() {
  return puppeteer.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--lang=en-US"],
  });
}

/** A page that fails the test on an uncaught page error or a CSP report. */
export async function watchedPage(ctx, errors) {
  const page = await ctx.newPage();
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    const t = m.text();
    if (m.type() === "error" && /Content Security Policy|Refused to/.test(t)) errors.push(`csp: ${t}`);
    if (process.env.WEIM_BROWSER_VERBOSE) console.error(`[page] ${t}`);
  });
  return page;
}

/** Reads one line from stdin. */
export function readLine() {
  return new Promise((resolve) => {
    let buf = "";
    const onData = (d) => {
      buf += d;
      const i = buf.indexOf("\n");
      if (i >= 0) {
        process.stdin.off("data", onData);
        process.stdin.pause();
        resolve(buf.slice(0, i));
      }
    };
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", onData);
    process.stdin.resume();
  });
}

/** Prints the result line the Rust side reads and exits. */
export function finish(result) {
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  process.exit(0);
}

/** A unique user name (6–20 letters and digits). */
export function uname(prefix) {
  return (prefix + Date.now().toString(36) + Math.random().toString(36).slice(2, 6)).slice(0, 20);
}
