// Server-sent events fan-out, as a Node web app does it: each web server
// process holds a pattern subscription `sse:*` and forwards the messages to
// its browsers; a publisher publishes numbered events. Two subscribers, one
// with ioredis (`psubscribe`) and one with node-redis v4 (`pSubscribe`), and
// an ioredis publisher, all through Redoubt with their defaults, while Redis
// is SIGKILLed for ~5 s and restarted.
//
// Asserted: neither subscriber ever sees an error; each receives messages in
// the order published; every message published after recovery (from the
// first publish after Redoubt reports Up) reaches both; and every publish
// acknowledged while Redis was down as reaching both subscribers (PUBLISH's
// reply counts them) reached them.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import Redis from 'ioredis';
import { createClient } from 'redis4';
import { sleep, startStack, waitUntil } from '../harness.js';

let stack;
const cleanups = [];

before(async () => {
  stack = await startStack({
    redisArgs: ['--repl-diskless-sync-delay', '0'],
    config: '[[keyspace]]\npattern = "app:*"\npolicy = "durable"\n',
  });
});

after(async () => {
  for (const f of cleanups) { try { await f(); } catch { /* closing */ } }
  if (stack) await stack.stop();
});

test('SSE fan-out: ioredis and node-redis pattern subscribers through a Redis SIGKILL', async (t) => {
  const url = `redis://127.0.0.1:${stack.redoubt.port}`;
  const got = { ioredis: [], noderedis: [] };
  const errors = { ioredis: [], noderedis: [] };
  const events = { ioredis: [], noderedis: [] };

  const io = new Redis({ host: '127.0.0.1', port: stack.redoubt.port });
  io.on('error', (e) => errors.ioredis.push(String(e?.message ?? e)));
  for (const ev of ['close', 'reconnecting', 'ready']) io.on(ev, () => events.ioredis.push(ev));
  io.on('pmessage', (pattern, channel, message) => {
    if (pattern === 'sse:*' && channel === 'sse:feed') got.ioredis.push(Number(message));
  });
  cleanups.push(() => io.disconnect());
  assert.equal(await io.psubscribe('sse:*'), 1);

  const nr = createClient({ url });
  nr.on('error', (e) => errors.noderedis.push(String(e?.message ?? e)));
  for (const ev of ['end', 'reconnecting', 'ready']) nr.on(ev, () => events.noderedis.push(ev));
  await nr.connect();
  cleanups.push(() => nr.disconnect());
  await nr.pSubscribe('sse:*', (message, channel) => {
    if (channel === 'sse:feed') got.noderedis.push(Number(message));
  });

  const pub = new Redis({ host: '127.0.0.1', port: stack.redoubt.port });
  cleanups.push(() => pub.disconnect());
  await waitUntil('both subscribed', async () => (await pub.publish('sse:feed', '0')) === 2, 5000, 20);

  let phase = 'before';
  const published = []; // {n, phase, count|null, err|null}
  let stop = false;
  let upAt = Infinity;
  const publisher = (async () => {
    for (let n = 1; !stop; n++) {
      const at = performance.now();
      const entry = { n, phase, at, count: null, err: null };
      try {
        entry.count = await pub.publish('sse:feed', String(n));
      } catch (e) {
        entry.err = String(e?.message ?? e);
      }
      published.push(entry);
      await sleep(10);
    }
  })();

  await sleep(1000);
  const killedAt = performance.now();
  phase = 'undetected';
  await stack.redis.kill();
  await waitUntil('Redoubt declares Redis down', async () => (await stack.redoubt.status()).state === 'down', 5000, 10);
  phase = 'down';
  await sleep(5000 - (performance.now() - killedAt));
  phase = 'recovering';
  await stack.redis.start();
  await waitUntil('Redoubt Up', async () => (await stack.redoubt.status()).state === 'up', 15000, 10);
  upAt = performance.now();
  phase = 'after';
  await sleep(2000);
  stop = true;
  await publisher;
  const last = published.filter((p) => p.count !== null).at(-1).n;
  await waitUntil('the last message at both subscribers', () => got.ioredis.includes(last) && got.noderedis.includes(last), 5000, 20)
    .catch(() => {});

  const byPhase = {};
  for (const p of published) {
    const b = (byPhase[p.phase] ??= { published: 0, acked: 0, errors: {} });
    b.published++;
    if (p.err) b.errors[p.err.slice(0, 100)] = (b.errors[p.err.slice(0, 100)] ?? 0) + 1;
    else b.acked++;
  }
  t.diagnostic(`publishes per phase: ${JSON.stringify(byPhase)}`);
  t.diagnostic(`received: ioredis ${got.ioredis.length}, node-redis ${got.noderedis.length}; ` +
    `connection events: ioredis ${events.ioredis.join(',') || 'none'}; node-redis ${events.noderedis.join(',') || 'none'}`);

  assert.deepEqual(errors, { ioredis: [], noderedis: [] }, 'subscribers saw errors');
  for (const [who, seq] of Object.entries(got)) {
    const out = seq.filter((n, i) => i > 0 && n <= seq[i - 1]);
    assert.deepEqual(out, [], `${who} received messages out of order or twice`);
  }
  const afterUp = published.filter((p) => p.at >= upAt);
  assert.ok(afterUp.length > 50, `only ${afterUp.length} publishes after Up`);
  const pubErrsAfter = afterUp.filter((p) => p.err);
  assert.deepEqual(pubErrsAfter.map((p) => p.err), [], 'publishes failed after Up');
  for (const [who, seq] of Object.entries(got)) {
    const s = new Set(seq);
    const missing = afterUp.filter((p) => !s.has(p.n)).map((p) => p.n);
    assert.deepEqual(missing, [], `${who} missed ${missing.length} of ${afterUp.length} messages published after Up`);
  }
  const downAcked = published.filter((p) => p.phase === 'down' && p.count === 2);
  t.diagnostic(`${downAcked.length} publishes during Down acknowledged as reaching 2 subscribers ` +
    `(of ${published.filter((p) => p.phase === 'down').length} made)`);
  for (const [who, seq] of Object.entries(got)) {
    const s = new Set(seq);
    const missing = downAcked.filter((p) => !s.has(p.n)).map((p) => p.n);
    assert.deepEqual(missing, [], `${who} missed messages whose PUBLISH during the outage counted it`);
  }
});
