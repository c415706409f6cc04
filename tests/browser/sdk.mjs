// The SDK in a real browser: two clients in one page register, become
// friends through c.api, and exchange 100 messages each way over the
// socket. Halfway the test prints CUT and the Rust side restarts the node
// (same port, same data) while sends are in flight: every message must
// still arrive exactly once.
//
// usage: node sdk.mjs <base-url> <outdir>
import { launch, watchedPage, finish, uname } from "./lib.mjs";

const [base] = process.argv.slice(2);
const errors = [];
const browser = await launch();
try {
  const page = await watchedPage(await browser.createBrowserContext(), errors);
  await page.goto(`${base}/sdk/weim.js`);
  const names = [uname("sdka"), uname("sdkb")];
  await page.evaluate(async (names) => {
    const { Weim } = await import("/sdk/weim.js");
    const t = (window.T = { states: [[], []], got: [new Map(), new Map()], sent: [[], []] });
    const a = new Weim({ base: location.origin });
    const b = new Weim({ base: location.origin });
    t.c = [a, b];
    const ua = await a.register(names[0], "secret1");
    const ub = await b.register(names[1], "secret1");
    t.ids = [ua.id, ub.id];
    await a.api("im/friend/add/request", { username: names[1], reason: "hi" });
    await b.api("im/friend/add/handle", { f_uid: ua.id, status: 1 });
    [a, b].forEach((c, i) => {
      c.on("state", (s) => t.states[i].push(s));
      c.on("message", (m) => {
        const n = t.got[i].get(m.Id);
        t.got[i].set(m.Id, { count: (n?.count || 0) + 1, body: m.Body, from: m.FromId });
      });
    });
    await Promise.all([a.connect(), b.connect()]);
    t.send = (i, from, to) =>
      (async () => {
        for (let k = from; k < to; k++) {
          const c = t.c[i];
          const body = `m${i}-${k}`;
          t.sent[i].push(c.sendToUser(t.ids[1 - i], body).then((id) => ({ id, body })));
          await new Promise((r) => setTimeout(r, 15));
        }
      })();
    await Promise.all([t.send(0, 0, 50), t.send(1, 0, 50)]);
    await Promise.all(t.sent.flat());
  }, names);
  // Halfway: start the second half and have the node restarted under it.
  await page.evaluate(() => {
    window.T.second = Promise.all([window.T.send(0, 50, 100), window.T.send(1, 50, 100)]);
  });
  process.stdout.write("CUT\n");
  const result = await page.evaluate(async () => {
    const t = window.T;
    await t.second;
    const sent = await Promise.all(t.sent.map((s) => Promise.all(s)));
    const want = (i) => sent[1 - i];
    const deadline = Date.now() + 60000;
    while (Date.now() < deadline && [0, 1].some((i) => want(i).some((s) => !t.got[i].has(s.id)))) {
      await new Promise((r) => setTimeout(r, 100));
    }
    // Late duplicates (pushed again after the reconnect) would show here.
    await new Promise((r) => setTimeout(r, 1500));
    return [0, 1].map((i) => {
      const got = t.got[i];
      const missing = want(i).filter((s) => got.get(s.id)?.body !== s.body).length;
      const duplicated = [...got.values()].filter((g) => g.count > 1).length;
      return {
        sent: sent[i].length,
        distinct_ids_sent: new Set(sent[i].map((s) => s.id)).size,
        received: got.size,
        missing,
        duplicated,
        reconnected: t.states[i].lastIndexOf("connecting") > t.states[i].indexOf("online"),
        state: t.c[i].state,
      };
    });
  });
  for (const c of [0, 1]) await page.evaluate((i) => window.T.c[i].close(), c);
  finish({ clients: result, errors });
} finally {
  await browser.close().catch(() => {});
}
