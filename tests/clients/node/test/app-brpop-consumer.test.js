// Queue consumers as Node workers write them with ioredis (defaults): a loop
// of `BRPOP <queue> 0` (block forever), and a polling loop of
// `BRPOP <queue> 1`, each with the usual catch-log-retry. They are blocked on
// their lists when Redis is SIGKILLed; Redis comes back ~5 s later.
//
// Asserted: each consumer resumes by itself and receives an item pushed
// after recovery (within 5 s); no error ever reaches the block-forever
// consumer (Redoubt holds its BRPOP or closes its connection, and ioredis
// reconnects and resends it); the polling consumer's BRPOP 1 during the
// outage answers nil after about its timeout, never an error; nothing is
// received twice or made up. One durable queue (`jobs:*`) and one with no
// keyspace (fail-fast), since the routing differs.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import Redis from 'ioredis';
import { sleep, startStack, waitUntil } from '../harness.js';

let stack;
const clients = [];

before(async () => {
  stack = await startStack({
    redisArgs: ['--appendonly', 'yes', '--appendfsync', 'always', '--repl-diskless-sync-delay', '0'],
    config: '[[keyspace]]\npattern = "jobs:*"\npolicy = "durable"\n',
  });
});

after(async () => {
  for (const c of clients) c.disconnect();
  if (stack) await stack.stop();
});

function consumer(queue, timeoutSec) {
  const c = new Redis({ host: '127.0.0.1', port: stack.redoubt.port });
  const st = { queue, got: [], errors: [], polls: [], events: [], stop: false };
  c.on('error', (e) => st.events.push(`error: ${e.message}`));
  for (const ev of ['close', 'reconnecting', 'ready']) c.on(ev, () => st.events.push(ev));
  clients.push(c);
  st.done = (async () => {
    while (!st.stop) {
      const at = performance.now();
      try {
        const r = await c.brpop(queue, timeoutSec);
        st.polls.push({ at, ms: performance.now() - at, r });
        if (r) st.got.push(r[1]);
      } catch (e) {
        st.errors.push({ at, ms: performance.now() - at, msg: e.message });
        await sleep(200); // the app logs and retries
      }
    }
  })();
  return st;
}

test('BRPOP consumers blocked when Redis is SIGKILLed resume by themselves', async (t) => {
  const producer = new Redis({ host: '127.0.0.1', port: stack.redoubt.port });
  clients.push(producer);
  const direct = new Redis({ host: '127.0.0.1', port: stack.redis.port, lazyConnect: true });
  direct.on('error', () => {});
  clients.push(direct);
  await waitUntil('replica streaming', async () => (await stack.redoubt.status()).journal?.replica?.state === 'streaming', 10000, 20);

  const consumers = [
    consumer('jobs:emails', 0),
    consumer('plain:emails', 0),
    consumer('jobs:polled', 1),
    consumer('plain:polled', 1),
  ];
  // Each consumer works before the outage.
  for (const c of consumers) {
    await producer.lpush(c.queue, `${c.queue}-before`);
    await waitUntil(`${c.queue} receives before the outage`, () => c.got.includes(`${c.queue}-before`), 5000, 10);
  }
  await sleep(300); // all blocked again

  const killedAt = performance.now();
  await stack.redis.kill();
  await waitUntil('Redoubt declares Redis down', async () => (await stack.redoubt.status()).state === 'down', 5000, 10);
  const downAt = performance.now();
  await sleep(5000 - (downAt - killedAt));
  const restartAt = performance.now();
  await stack.redis.start();
  await waitUntil('Redoubt Up', async () => {
    const s = await stack.redoubt.status();
    return s.state === 'up' && s.journal.pending_commands === 0;
  }, 15000, 10);
  const upAt = performance.now();

  const pushedAt = performance.now();
  for (const c of consumers) assert.ok((await producer.lpush(c.queue, `${c.queue}-after`)) >= 1);
  const lat = {};
  for (const c of consumers) {
    await waitUntil(`${c.queue} receives the item pushed after recovery`, () => c.got.includes(`${c.queue}-after`), 5000, 10)
      .catch((e) => {
        throw new Error(`${e.message}; consumer errors: ${JSON.stringify(c.errors)}; events: ${c.events.join(',')}`);
      });
    lat[c.queue] = Math.round(performance.now() - pushedAt);
  }
  for (const c of consumers) c.stop = true;
  // Wake the blocked ones so their loops end.
  for (const c of consumers) await producer.lpush(c.queue, 'stop');
  await Promise.all(consumers.map((c) => Promise.race([c.done, sleep(3000)])));

  for (const c of consumers) {
    const outagePolls = c.polls.filter((p) => p.at >= downAt && p.at < restartAt);
    t.diagnostic(`${c.queue}: got ${JSON.stringify(c.got)}; errors ${JSON.stringify(c.errors)}; ` +
      `connection events ${c.events.join(',') || 'none'}; polls during Down ${outagePolls.length} ` +
      `(nil ${outagePolls.filter((p) => p.r === null).length}, took ${outagePolls.map((p) => p.ms.toFixed(0)).join("/")} ms); ` +
      `item after recovery received in ${lat[c.queue]} ms`);
  }
  t.diagnostic(`detected ${(downAt - killedAt).toFixed(0)} ms after kill; Up ${(upAt - restartAt).toFixed(0)} ms after restart`);

  for (const c of consumers) {
    assert.deepEqual(c.got.filter((x) => x !== 'stop'), [`${c.queue}-before`, `${c.queue}-after`], `${c.queue} received`);
  }
  for (const c of consumers.filter((x) => x.queue.endsWith('emails'))) {
    assert.deepEqual(c.errors, [], `block-forever consumer on ${c.queue} got errors`);
  }
  for (const c of consumers.filter((x) => x.queue.endsWith('polled'))) {
    assert.deepEqual(c.errors, [], `polling consumer on ${c.queue} got errors`);
    const outagePolls = c.polls.filter((p) => p.at >= downAt + 100 && p.at + p.ms < restartAt);
    assert.ok(outagePolls.length >= 2, `${c.queue}: only ${outagePolls.length} BRPOP 1 answered during the outage`);
    for (const p of outagePolls) {
      assert.equal(p.r, null);
      assert.ok(p.ms >= 900 && p.ms < 2500, `${c.queue}: BRPOP 1 during the outage answered after ${p.ms.toFixed(0)} ms`);
    }
  }
  // The durable list is in Redis as it should be: empty (all consumed).
  await direct.connect();
  assert.equal(await direct.llen('jobs:emails'), 0);
});
