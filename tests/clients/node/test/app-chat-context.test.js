// A chat bot's conversation context, as a WhatsApp/SMS bot keeps it: for
// every incoming message the app reads `context:<phone>` (a JSON document
// with the last turns), appends the turn and writes it back with
// `SET … EX 86400`. Many phones, new ones arriving all the time, handled by
// several concurrent loops (each phone by one loop, in order, as a per-user
// queue would). ioredis with its defaults, talking to Redoubt.
//
// Redis (AOF, appendfsync always) is SIGKILLed mid-traffic for ~5 s and
// restarted. Asserted:
// - from Redoubt's detection of the outage on, >= 99.9% of requests are
//   served (the figure is printed per phase);
// - nothing the app read (during the outage or not) differs from what it
//   last wrote for that phone, absence included (a new phone reads nil);
// - afterwards every acknowledged write is in Redis, checked directly,
//   with its TTL (> 86000 s).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import Redis from 'ioredis';
import { sleep, startStack, waitUntil } from '../harness.js';

const LOOPS = 8;
const PHONES_PER_LOOP = 25;
const TTL = 86400;
const OUTAGE_MS = 5000;

let stack;
const clients = [];

before(async () => {
  stack = await startStack({
    redisArgs: ['--appendonly', 'yes', '--appendfsync', 'always', '--repl-diskless-sync-delay', '0'],
    config: '[[keyspace]]\npattern = "context:*"\npolicy = "durable"\n',
  });
});

after(async () => {
  for (const c of clients) c.disconnect();
  if (stack) await stack.stop();
});

/** Races `p` against a watchdog so a hung command is an error, not a stalled test. */
function guarded(p, ms = 15000) {
  let t;
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`no reply within ${ms} ms`)), ms); })])
    .finally(() => clearTimeout(t));
}

test('chat context app (ioredis defaults): Redis SIGKILLed for 5 s mid-traffic', async (t) => {
  const app = new Redis({ host: '127.0.0.1', port: stack.redoubt.port }); // ioredis defaults
  const direct = new Redis({ host: '127.0.0.1', port: stack.redis.port, lazyConnect: true });
  direct.on('error', () => {});
  clients.push(app, direct);

  await waitUntil('replica streaming', async () => (await stack.redoubt.status()).journal?.replica?.state === 'streaming', 10000, 20);

  // phase marks (performance.now()): kill, detected (Down), restarted, up.
  const marks = { kill: Infinity, detected: Infinity, restarted: Infinity, up: Infinity };
  const phaseOf = (at) => (at < marks.kill ? 'before' : at < marks.detected ? 'undetected'
    : at < marks.restarted ? 'down' : at < marks.up ? 'recovering' : 'after');
  const stats = {};
  for (const p of ['before', 'undetected', 'down', 'recovering', 'after']) {
    stats[p] = { requests: 0, failed: 0, reads: 0, errors: new Map() };
  }
  // The app's own ledger: the last acknowledged value of every phone's
  // context; a write that failed in a way that may have executed leaves
  // both the old and the new value possible.
  const ledger = new Map(); // phone -> { values: Set<string|null> }
  const mismatches = [];
  let maxLatency = 0;
  let newPhones = 0;
  let stop = false;

  async function handle(phone, n) {
    const start = performance.now();
    const st = stats[phaseOf(start)];
    st.requests++;
    const known = ledger.get(phone) ?? { values: new Set([null]) };
    let raw;
    try {
      raw = await guarded(app.get(`context:${phone}`));
    } catch (e) {
      st.failed++;
      const k = `GET: ${String(e.message).slice(0, 120)}`;
      st.errors.set(k, (st.errors.get(k) ?? 0) + 1);
      return;
    }
    st.reads++;
    if (!known.values.has(raw)) {
      mismatches.push({ phone, phase: phaseOf(start), read: raw, expected: [...known.values] });
    }
    const ctx = raw === null ? { phone, turns: [], messages: 0 } : JSON.parse(raw);
    ctx.turns.push({ role: 'user', text: `message ${n}`, at: Date.now() });
    ctx.turns = ctx.turns.slice(-10);
    ctx.messages += 1;
    const next = JSON.stringify(ctx);
    try {
      const r = await guarded(app.set(`context:${phone}`, next, 'EX', TTL));
      if (r !== 'OK') throw new Error(`SET answered ${r}`);
      ledger.set(phone, { values: new Set([next]) });
    } catch (e) {
      st.failed++;
      const msg = String(e.message);
      const k = `SET: ${msg.slice(0, 120)}`;
      st.errors.set(k, (st.errors.get(k) ?? 0) + 1);
      // Not executed (UNAVAILABLE): the old value stands. Anything else may
      // have been executed.
      if (!msg.startsWith('UNAVAILABLE')) ledger.set(phone, { values: new Set([...known.values, next]) });
    }
    maxLatency = Math.max(maxLatency, performance.now() - start);
  }

  async function loop(l) {
    const phones = [];
    for (let i = 0; i < PHONES_PER_LOOP; i++) phones.push(`+1555${l}${String(i).padStart(4, '0')}`);
    let n = 0;
    while (!stop) {
      let phone;
      if (Math.random() < 0.1) {
        phone = `+1555${l}${String(phones.length).padStart(4, '0')}`;
        phones.push(phone);
        newPhones++;
      } else {
        phone = phones[Math.floor(Math.random() * phones.length)];
      }
      await handle(phone, n++);
      await sleep(2);
    }
  }

  const loops = [];
  for (let l = 0; l < LOOPS; l++) loops.push(loop(l));
  await sleep(2000);
  // Wait until the replica holds what the app wrote so far (as in
  // production, where Redis has been up for a while).
  await waitUntil('replica streaming with the contexts', async () => {
    const r = (await stack.redoubt.status()).journal.replica;
    return r.state === 'streaming' && r.keys >= LOOPS * PHONES_PER_LOOP;
  }, 10000, 20);

  marks.kill = performance.now();
  await stack.redis.kill();
  await waitUntil('Redoubt declares Redis down', async () => (await stack.redoubt.status()).state === 'down', 5000, 10);
  marks.detected = performance.now();
  await sleep(OUTAGE_MS - (marks.detected - marks.kill));
  marks.restarted = performance.now();
  await stack.redis.start();
  await waitUntil('Redoubt Up with its journal replayed', async () => {
    const s = await stack.redoubt.status();
    return s.state === 'up' && s.journal.pending_commands === 0 && !s.journal.serving_locally;
  }, 15000, 10);
  marks.up = performance.now();
  await sleep(2000);
  stop = true;
  await Promise.all(loops);

  const fmt = (p) => {
    const s = stats[p];
    const errs = [...s.errors].map(([k, v]) => `${v}× ${k}`).join('; ');
    return `${p}: ${s.requests - s.failed}/${s.requests} served${errs ? ` (${errs})` : ''}`;
  };
  t.diagnostic(['before', 'undetected', 'down', 'recovering', 'after'].map(fmt).join(' | '));
  t.diagnostic(`detected ${(marks.detected - marks.kill).toFixed(0)} ms after the kill; Up (journal drained) ` +
    `${(marks.up - marks.restarted).toFixed(0)} ms after the restart; ${newPhones} new phones; max request latency ` +
    `${maxLatency.toFixed(0)} ms; ${ledger.size} phones`);

  // Served from detection on.
  let req = 0; let failed = 0;
  for (const p of ['down', 'recovering', 'after']) { req += stats[p].requests; failed += stats[p].failed; }
  const servedPct = (100 * (req - failed)) / req;
  t.diagnostic(`after detection: ${req - failed}/${req} requests served = ${servedPct.toFixed(3)}%`);
  assert.ok(stats.down.reads > 200, `only ${stats.down.reads} reads served while Redis was down`);
  assert.ok(servedPct >= 99.9, `only ${servedPct.toFixed(3)}% served after detection: ` +
    ['down', 'recovering', 'after'].map(fmt).join(' | '));
  assert.deepEqual(mismatches.slice(0, 5), [], `${mismatches.length} reads differed from the app's last write`);

  // Every acknowledged write is in Redis, with its TTL.
  await direct.connect();
  const bad = [];
  for (const [phone, { values }] of ledger) {
    const [v, ttl] = await Promise.all([direct.get(`context:${phone}`), direct.ttl(`context:${phone}`)]);
    if (!values.has(v)) bad.push(`${phone}: redis has ${String(v).slice(0, 80)}, app last wrote ${[...values].map((x) => String(x).slice(0, 80))}`);
    else if (v !== null && !(ttl > 86000)) bad.push(`${phone}: TTL ${ttl}`);
  }
  assert.deepEqual(bad.slice(0, 5), [], `${bad.length} of ${ledger.size} phones wrong in Redis`);
});
