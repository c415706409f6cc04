// The web app in a real browser: three users in three browser contexts
// register through the form, become friends, chat (type, Enter, seen on
// the other side, an unread badge first), send a picture shown inline,
// withdraw a message, reload to see the history, and talk in a group.
// Screenshots go to <outdir>.
//
// usage: node web.mjs <base-url> <outdir>
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { launch, watchedPage, finish, uname } from "./lib.mjs";

const [base, outdir] = process.argv.slice(2);
const errors = [];
const steps = [];
const step = (s) => {
  steps.push(s);
  if (process.env.WEIM_BROWSER_VERBOSE) console.error(`step: ${s}`);
};

/** A 160×100 PNG with a gradient (a real picture the node checks by content). */
function png() {
  const w = 160, hgt = 100;
  const raw = Buffer.alloc((w * 3 + 1) * hgt);
  for (let y = 0; y < hgt; y++) {
    raw[y * (w * 3 + 1)] = 0;
    for (let x = 0; x < w; x++) {
      const o = y * (w * 3 + 1) + 1 + x * 3;
      raw[o] = 37 + x; raw[o + 1] = 99 + y; raw[o + 2] = 235;
    }
  }
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const c = Buffer.alloc(4); c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(hgt, 4);
  ihdr[8] = 8; ihdr[9] = 2; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", ihdr), chunk("IDAT", zlib.deflateSync(raw)), chunk("IEND", Buffer.alloc(0))]);
}

const browser = await launch();
const T = 20000;
try {
  const open = async () => {
    const page = await watchedPage(await browser.createBrowserContext(), errors);
    await page.setViewport({ width: 1280, height: 800 });
    await page.goto(`${base}/`);
    return page;
  };
  const register = async (page, name) => {
    await page.waitForSelector("#username", { timeout: T });
    await page.type("#username", name);
    await page.type("#password", "secret1");
    await page.click("#register-btn");
    await page.waitForSelector("#state.online", { timeout: T });
    return page.evaluate(() => JSON.parse(localStorage.getItem("weim.user")).id);
  };
  const text = (page, sel, want) =>
    page.waitForFunction((sel, want) => [...document.querySelectorAll(sel)].some((e) => e.textContent.includes(want)), { timeout: T }, sel, want);
  const say = async (page, msg) => {
    await page.click("#composer");
    await page.type("#composer", msg);
    await page.keyboard.press("Enter");
    await text(page, "#messages .msg.mine:not(.pending) .bubble", msg);
  };
  const shot = (page, name) => page.screenshot({ path: path.join(outdir, `${name}.png`) });

  const names = [uname("alice"), uname("bobby"), uname("carol")];
  const [a, b, c] = [await open(), await open(), await open()];
  // The interface speaks Chinese and English.
  await a.waitForSelector("#login-btn", { timeout: T });
  await a.click("button.lang");
  await text(a, "#login-btn", "登录");
  await shot(a, "01-sign-in-zh");
  await a.click("button.lang");
  await text(a, "#login-btn", "Log in");
  await shot(a, "01-sign-in");
  const [ia, ib, ic] = [await register(a, names[0]), await register(b, names[1]), await register(c, names[2])];
  step("registered");

  // A finds B and asks; B accepts; both see each other in their lists.
  await a.type("#friend-search", names[1]);
  await a.keyboard.press("Enter");
  await a.waitForSelector(`#friend-results li[data-uid="${ib}"] button.add`, { timeout: T });
  await a.click(`#friend-results li[data-uid="${ib}"] button.add`);
  await b.waitForSelector(`#friend-reqs li[data-uid="${ia}"] button.accept`, { timeout: T });
  await shot(b, "02-friend-request");
  await b.click(`#friend-reqs li[data-uid="${ia}"] button.accept`);
  await a.waitForSelector(`#friends li[data-key="u:${ib}"]`, { timeout: T });
  await b.waitForSelector(`#friends li[data-key="u:${ia}"] .dot.online`, { timeout: T });
  step("friends");

  // A writes first: B, elsewhere, sees an unread badge; then B opens it.
  await a.click(`#friends li[data-key="u:${ib}"]`);
  await say(a, "Hello Bob! 你好");
  await text(b, `#friends li[data-key="u:${ia}"] .badge.on`, "1");
  await shot(b, "03-unread-badge");
  await b.click(`#friends li[data-key="u:${ia}"]`);
  await text(b, "#messages .msg:not(.mine) .bubble", "Hello Bob! 你好");
  await b.waitForFunction(() => !document.querySelector("#friends .badge.on"), { timeout: T });
  await say(b, "Hi Alice, the new gateway is fast.");
  await text(a, "#messages .msg:not(.mine) .bubble", "Hi Alice, the new gateway is fast.");
  step("chat");

  // A picture, shown inline on the other side.
  const pic = path.join(outdir, "picture.png");
  fs.writeFileSync(pic, png());
  const input = await a.$("#file");
  await input.uploadFile(pic);
  await a.waitForSelector("#messages .msg.mine:not(.pending) img.picture", { timeout: T });
  await b.waitForFunction(() => {
    const img = document.querySelector("#messages .msg:not(.mine) img.picture");
    return img && img.complete && img.naturalWidth === 160;
  }, { timeout: T });
  step("picture");

  // A withdraws a message; B sees it withdrawn.
  await say(a, "a message to take back");
  await text(b, "#messages .bubble", "a message to take back");
  await a.evaluate(() => [...document.querySelectorAll("#messages .msg.mine")].pop().querySelector("button.withdraw").click());
  await b.waitForFunction(() => !document.querySelector("#messages").textContent.includes("a message to take back") && document.querySelector("#messages em.withdrawn"), { timeout: T });
  await say(a, "Let's make a group with Carol.");
  await text(b, "#messages .bubble", "Let's make a group with Carol.");
  await shot(a, "04-chat");
  step("withdraw");

  // B reloads: the history is there.
  await b.reload();
  await b.waitForSelector(`#friends li[data-key="u:${ia}"]`, { timeout: T });
  await b.click(`#friends li[data-key="u:${ia}"]`);
  await text(b, "#messages .bubble", "Hello Bob! 你好");
  await b.waitForSelector("#messages img.picture", { timeout: T });
  await b.waitForSelector("#messages em.withdrawn", { timeout: T });
  step("history");

  // A group of three: A creates it, B and C ask to join, A accepts both.
  const group = uname("team");
  await a.click('button.tab[data-tab="groups"]');
  await a.type("#group-name", group);
  await a.keyboard.press("Enter");
  const gid = await a.waitForFunction(() => document.querySelector("#groups li.item")?.dataset.key, { timeout: T }).then((h) => h.jsonValue());
  for (const p of [b, c]) {
    await p.click('button.tab[data-tab="groups"]');
    await p.type("#group-search", group);
    await p.keyboard.press("Enter");
    await p.waitForSelector("#group-results button.join", { timeout: T });
    await p.click("#group-results button.join");
  }
  for (const uid of [ib, ic]) {
    await a.waitForFunction((uid) => [...document.querySelectorAll("#group-reqs li")].some((li) => li.textContent.includes(uid)), { timeout: T }, uid === ib ? names[1] : names[2]);
    await a.evaluate((name) => [...document.querySelectorAll("#group-reqs li")].find((li) => li.textContent.includes(name)).querySelector("button.accept").click(), uid === ib ? names[1] : names[2]);
  }
  for (const p of [b, c]) {
    await p.waitForSelector(`#groups li[data-key="${gid}"]`, { timeout: T });
    await p.click(`#groups li[data-key="${gid}"]`);
  }
  await a.click(`#groups li[data-key="${gid}"]`);
  await a.waitForFunction(() => /\(3\)/.test(document.querySelector("#show-members")?.textContent || ""), { timeout: T });
  await say(a, "Welcome to the team, everyone!");
  for (const p of [b, c]) await text(p, "#messages .msg:not(.mine) .bubble", "Welcome to the team, everyone!");
  await say(c, "Thanks! 谢谢");
  for (const p of [a, b]) await text(p, "#messages .msg:not(.mine) .bubble", "Thanks! 谢谢");
  await text(a, "#messages .from", names[2]);
  await shot(a, "05-group");
  step("group");

  // Back to the friend conversation for the picture of the product.
  await a.click('button.tab[data-tab="friends"]');
  await a.click(`#friends li[data-key="u:${ib}"]`);
  await a.waitForSelector("#messages img.picture", { timeout: T });
  await a.waitForFunction(() => !document.querySelector("#toasts .toast"), { timeout: T });
  await shot(a, "06-conversation");

  // 35 more messages (over REST, from A's page), then B reloads: the
  // newest page of history is shown, the first message only once B
  // scrolls up.
  await a.evaluate(async (to) => {
    const token = localStorage.getItem("weim.token");
    for (let i = 1; i <= 35; i++) {
      const body = new URLSearchParams({ to_uid: to, body: `filler ${i}` });
      await fetch("/api/v1/im/chat/send/user", { method: "POST", headers: { "Login-Token": token }, body });
    }
  }, ib);
  await b.reload();
  await b.waitForSelector(`#friends li[data-key="u:${ia}"]`, { timeout: T });
  await b.click(`#friends li[data-key="u:${ia}"]`);
  await text(b, "#messages .bubble", "filler 35");
  if (await b.$eval("#messages", (e) => e.textContent.includes("Hello Bob!"))) throw new Error("history not paged");
  await b.$eval("#messages", (e) => { e.scrollTop = 0; });
  await text(b, "#messages .bubble", "Hello Bob! 你好");
  step("paging");

  // A phone-sized window shows the conversation alone, with a way back.
  await b.setViewport({ width: 390, height: 780 });
  await b.waitForFunction(() => !document.querySelector(".side").offsetParent && document.querySelector("#composer").offsetParent, { timeout: T });
  await shot(b, "07-phone-conversation");
  await b.click("button.back");
  await b.waitForFunction(() => document.querySelector(".side").offsetParent && !document.querySelector("#conv").offsetParent, { timeout: T });
  step("phone");
  finish({ steps, errors });
} catch (e) {
  console.error(e);
  finish({ steps, errors: [...errors, `failed after ${steps.at(-1) || "start"}: ${e.message}`] });
} finally {
  await browser.close().catch(() => {});
}
