// An event producer written as a production Node app would write it, with
// ioredis, pushing events onto a durable list through Redoubt while Redis is
// SIGKILLed and restarted; afterwards a consumer, through Redoubt too,
// receives every acknowledged event exactly once, none twice, and no event
// whose push was refused.
//
// Redis runs with `appendonly yes` / `appendfsync always`, as a Redis holding
// a queue would: the events it acknowledged before the kill are its to keep,
// and the test checks Redoubt's part, the events acknowledged while Redis
// was gone (journaled, replayed exactly once) and the handover around the
// kill and the restart (a push sent to Redis whose reply never came is
// -UNCERTAIN, never also journaled).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import Redis from 'ioredis';
import { startStack, sleep, waitUntil } from '../harness.js';

const LIST = 'events:orders';
const WORKERS = 4; // concurrent pushes, pipelined by ioredis on one connection
const ACKED_WHILE_DOWN = 300;

let stack;
const clients = [];

before(async () => {
  stack = await startStack({
    redisArgs: ['--appendonly', 'yes', '--appendfsync', 'always'],
    config: '[[keyspace]]\npattern = "events:*"\npolicy = "durable"\n',
  });
});

after(async () => {
  for (const c of clients) c.disconnect();
  if (stack) await stack.stop();
});

// The producer's ioredis options, as a production app runs it: ioredis's
// defaults (offline queue on, 20 reconnect attempts per request, resend of
// unfulfilled commands after a reconnect) plus a command timeout so a
// request never hangs. Resending after a reconnect is ioredis's at-least-once
// hazard: a push whose reply was lost is sent again. With Redoubt in front,
// the connection does not break when Redis dies (Redoubt answers instead), so
// nothing is ever resent; the test asserts that by counting reconnects.
function producerClient() {
  const c = new Redis({
    host: '127.0.0.1',
    port: stack.redoubt.port,
    commandTimeout: 5000, // Redoubt answers within command_timeout_ms (1 s)
    connectionName: 'orders-producer',
  });
  clients.push(c);
  return c;
}

/**
 * The producer's send: an event is pushed until one attempt is answered.
 * -UNAVAILABLE means "not executed", so the app retries it (after a short
 * backoff, as apps do); -UNCERTAIN means "may have been executed", so it is
 * not retried (that could duplicate it) but reported. Each attempt carries
 * its own payload `<event>#<attempt>` so the consumer's side can tell which
 * attempt landed. Returns the acknowledged payload, or null.
 */
async function send(c, event, log) {
  for (let attempt = 0; ; attempt++) {
    const payload = `${event}#${attempt}`;
    const at = performance.now();
    try {
      await c.lpush(LIST, payload);
      log.acked.set(payload, { event, sentAt: at });
      return payload;
    } catch (e) {
      const msg = String(e?.message ?? e);
      if (msg.startsWith('UNAVAILABLE')) {
        log.refused.add(payload);
        if (attempt < 50) { await sleep(10); continue; }
        log.gaveUp.add(event);
        return null;
      }
      if (msg.startsWith('UNCERTAIN')) log.uncertain.add(payload);
      else log.errors.set(payload, msg); // timeouts, connection errors: may have run
      return null;
    }
  }
}

test('ioredis producer through a Redis outage: every acknowledged event consumed exactly once', async (t) => {
  const redoubt = stack.redoubt;
  const producer = producerClient();
  let reconnects = 0;
  producer.on('reconnecting', () => { reconnects++; });
  producer.on('error', () => {}); // counted through 'reconnecting'; commands report their own errors

  const log = { acked: new Map(), refused: new Set(), uncertain: new Set(), errors: new Map(), gaveUp: new Set() };
  const order = Array.from({ length: WORKERS }, () => []); // per worker, acked payloads in send order
  let stop = false;
  const workers = Array.from({ length: WORKERS }, (_, w) => (async () => {
    for (let i = 0; !stop; i++) {
      const event = `w${w}-${String(i).padStart(6, '0')}`;
      const acked = await send(producer, event, log);
      if (acked) order[w].push(acked);
    }
  })());
  const ackedSince = (t0) => [...log.acked.values()].filter((a) => a.sentAt >= t0).length;

  try {
    await waitUntil('200 events acknowledged with Redis up', () => log.acked.size >= 200, 20000);
    // Local answers go only to sessions whose Redis user Redoubt knows
    // (here Redis's `default`): it reads the user's ACL while Up.
    await waitUntil("redoubt to know the producer's redis user",
      async () => (await redoubt.status()).auth.users_with_known_permissions >= 1, 5000);

    await stack.redis.kill(); // SIGKILL
    await waitUntil('redoubt declares redis down', async () => (await redoubt.status()).state === 'down', 5000);
    const downAt = performance.now();
    await waitUntil(`${ACKED_WHILE_DOWN} events acknowledged while redis is down`,
      () => ackedSince(downAt) >= ACKED_WHILE_DOWN, 20000);
    const st = await redoubt.status();
    assert.equal(st.state, 'down', 'redis came back by itself?');
    const ackedWhileDown = ackedSince(downAt);
    assert.ok(st.journal.pending_commands >= ackedWhileDown,
      `${ackedWhileDown} pushes acknowledged while down but only ${st.journal.pending_commands} journaled`);

    // Redis restarts on the same port and reloads its AOF; Redoubt replays
    // the journal into it while the producer keeps pushing.
    await stack.redis.start();
    await waitUntil('journal replayed, keys back upstream', async () => {
      const s = await redoubt.status();
      return s.state === 'up' && s.journal.pending_commands === 0 && !s.journal.serving_locally;
    }, 15000);
    const drainedAt = performance.now();
    await waitUntil('200 events acknowledged after recovery', () => ackedSince(drainedAt) >= 200, 20000);
    stop = true;
    await Promise.all(workers);

    // The consumer, another ioredis client of the same app, drains the list.
    const consumer = new Redis({ host: '127.0.0.1', port: redoubt.port, commandTimeout: 5000 });
    clients.push(consumer);
    const consumed = [];
    for (;;) {
      const batch = await consumer.rpop(LIST, 500);
      if (!batch) break;
      consumed.push(...batch);
    }
    const direct = new Redis({ host: '127.0.0.1', port: stack.redis.port });
    clients.push(direct);
    assert.equal(await direct.llen(LIST), 0, 'the consumer did not drain the list in redis');

    // None twice.
    const seen = new Map();
    for (const p of consumed) seen.set(p, (seen.get(p) ?? 0) + 1);
    const twice = [...seen].filter(([, n]) => n > 1);
    assert.deepEqual(twice, [], `events consumed more than once: ${JSON.stringify(twice.slice(0, 10))}`);
    // Every acknowledged one, exactly once.
    const lost = [...log.acked.keys()].filter((p) => !seen.has(p));
    assert.deepEqual(lost.slice(0, 10), [], `${lost.length} acknowledged events never consumed`);
    // A refused push was not executed: never consumed.
    const refusedButThere = [...log.refused].filter((p) => seen.has(p));
    assert.deepEqual(refusedButThere, [], 'pushes answered -UNAVAILABLE were executed');
    // Nothing consumed that was not sent, and at most one attempt per event.
    const sent = new Set([...log.acked.keys(), ...log.refused, ...log.uncertain, ...log.errors.keys()]);
    assert.deepEqual(consumed.filter((p) => !sent.has(p)), [], 'consumed events never sent');
    const perEvent = new Map();
    for (const p of consumed) {
      const e = p.split('#')[0];
      perEvent.set(e, (perEvent.get(e) ?? 0) + 1);
    }
    assert.deepEqual([...perEvent].filter(([, n]) => n > 1), [], 'an event landed twice through retries');
    // In order, per worker: LPUSH then RPOP is FIFO, through the outage and
    // the replay (journal order = the order Redoubt acknowledged).
    const pos = new Map(consumed.map((p, i) => [p, i]));
    for (const [w, sentOrder] of order.entries()) {
      const idx = sentOrder.map((p) => pos.get(p));
      const outOfOrder = idx.findIndex((v, i) => i > 0 && v < idx[i - 1]);
      assert.equal(outOfOrder, -1, `worker ${w}: ${sentOrder[outOfOrder]} consumed before ${sentOrder[outOfOrder - 1]}`);
    }
    // The producer's connection to Redoubt never broke, so ioredis never
    // had anything to resend or to fail with a connection error.
    assert.equal(reconnects, 0, 'the producer reconnected');
    assert.deepEqual([...log.errors].slice(0, 5), [], 'pushes failed with client-side errors');
    assert.equal(log.gaveUp.size, 0, `${log.gaveUp.size} events refused 50 times in a row`);

    const uncertainLanded = [...log.uncertain].filter((p) => seen.has(p)).length;
    t.diagnostic(`acked ${log.acked.size} (${ackedWhileDown} while redis was down), ` +
      `refused attempts ${log.refused.size} (retried), uncertain ${log.uncertain.size} (${uncertainLanded} landed), ` +
      `consumed ${consumed.length}`);
  } finally {
    stop = true;
    await Promise.allSettled(workers);
  }
});
