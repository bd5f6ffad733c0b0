// Redis dies under an ioredis application talking through Redoubt: Redoubt
// answers promptly with -UNAVAILABLE (never lets the client hang), and the
// same ioredis client works again once Redis is back on the same port.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import Redis from 'ioredis';
import { startStack, waitUntil } from '../harness.js';

let stack;
const clients = [];

function proxy(opts = {}) {
  // maxRetriesPerRequest: 0 so that what we observe is Redoubt's own reply,
  // not ioredis retrying. The connection to Redoubt itself stays up.
  const c = new Redis({ host: '127.0.0.1', port: stack.redoubt.port, maxRetriesPerRequest: 0, ...opts });
  c.on('error', () => {});
  clients.push(c);
  return c;
}

function direct(opts = {}) {
  const c = new Redis({ host: '127.0.0.1', port: stack.redis.port, maxRetriesPerRequest: 0, ...opts });
  c.on('error', () => {});
  clients.push(c);
  return c;
}

/** Runs the command; returns {ms, err, value}. */
async function timed(promise) {
  const t0 = performance.now();
  try {
    const value = await promise;
    return { ms: performance.now() - t0, value, err: null };
  } catch (err) {
    return { ms: performance.now() - t0, value: undefined, err };
  }
}

before(async () => {
  stack = await startStack();
});

after(async () => {
  for (const c of clients) c.disconnect();
  if (stack) await stack.stop();
});

test('SIGKILLed Redis: prompt UNAVAILABLE through Redoubt, then recovery on the same client', async (t) => {
  const c = proxy();
  const sub = proxy();
  const received = [];
  sub.on('message', (ch, msg) => received.push(`${ch}:${msg}`));
  assert.equal(await c.set('before', 'v1'), 'OK');
  assert.equal(await c.get('before'), 'v1');
  assert.equal(await sub.subscribe('alerts'), 1);
  const blocker = proxy();
  const blocked = timed(blocker.blpop('never-pushed', 0));
  const d = direct();
  await waitUntil('BLPOP blocked in redis', async () => /cmd=blpop/.test(await d.client('LIST')), 5000);
  d.disconnect();
  assert.equal((await stack.redoubt.readyz()).status, 200);

  await stack.redis.kill(); // SIGKILL
  const killedAt = performance.now();

  // A read straight after the kill, before the prober has noticed.
  const r1 = await timed(c.get('before'));
  assert.ok(r1.err, `GET after SIGKILL answered ${JSON.stringify(r1.value)} instead of an error`);
  assert.match(r1.err.message, /^UNAVAILABLE/, `GET straight after SIGKILL: ${r1.err.message}`);
  assert.ok(r1.ms < 1500, `GET straight after SIGKILL took ${r1.ms.toFixed(0)} ms`);

  // The blocked BLPOP (block forever) is not left hanging, and gets no
  // error reply a worker would take as its answer: its connection is
  // closed, which client libraries retry (here, with retries off, ioredis
  // reports the closed connection).
  const b = await Promise.race([blocked, new Promise((r) => setTimeout(() => r(null), 3000))]);
  assert.ok(b, 'BLPOP 0 still hanging 3 s after Redis was SIGKILLed');
  assert.ok(b.err, `BLPOP answered ${JSON.stringify(b.value)}`);
  assert.doesNotMatch(b.err.message, /^(UNCERTAIN|UNAVAILABLE|ERR)/, `BLPOP 0 when Redis died got a reply: ${b.err.message}`);
  assert.ok(performance.now() - killedAt < 1500 + 200, 'BLPOP answered within ~1.5 s of the kill');

  // Once Redoubt has declared Redis down, reads and writes are refused at
  // once (not executed, so safe to retry).
  await waitUntil('/readyz 503', async () => (await stack.redoubt.readyz()).status === 503, 3000);
  const rz = await stack.redoubt.readyz();
  assert.equal(rz.body.ready, false);
  for (const [what, cmd] of [['GET', () => c.get('before')], ['SET', () => c.set('during', 'x')],
    ['INCR', () => c.incr('n')], ['EVAL', () => c.eval('return 1', 0)]]) {
    const r = await timed(cmd());
    assert.ok(r.err, `${what} during the outage answered ${JSON.stringify(r.value)}`);
    assert.match(r.err.message, /^UNAVAILABLE/, `${what} during the outage: ${r.err.message}`);
    assert.ok(r.ms < 1500, `${what} during the outage took ${r.ms.toFixed(0)} ms`);
  }
  // Many at once on a pipeline: every one refused, none hanging.
  const p = c.pipeline();
  for (let i = 0; i < 50; i++) p.get(`k${i}`);
  const pr = await timed(p.exec());
  assert.ok(pr.ms < 1500, `50 pipelined GETs took ${pr.ms.toFixed(0)} ms`);
  assert.equal(pr.value.length, 50);
  for (const [err] of pr.value) assert.match(err?.message ?? 'no error', /^UNAVAILABLE/);

  // An application starting during the outage: Redoubt accepts it (HELLO,
  // CLIENT SETINFO answered locally), its ready check's INFO and its first
  // command are refused promptly instead of hanging.
  const late = proxy();
  const lr = await timed(late.get('before'));
  assert.ok(lr.err, `GET on a client started during the outage answered ${JSON.stringify(lr.value)}`);
  assert.match(lr.err.message, /^UNAVAILABLE/, `GET on a client started during the outage: ${lr.err.message}`);
  assert.ok(lr.ms < 1500, `GET on a client started during the outage took ${lr.ms.toFixed(0)} ms`);

  // Redis comes back on the same port (empty: --save '').
  await stack.redis.start();
  const back = performance.now();
  await waitUntil('SET through Redoubt succeeds again', async () => (await c.set('after', 'v2')) === 'OK', 5000, 20);
  const recoveredMs = performance.now() - back;
  assert.equal(await c.get('after'), 'v2');
  assert.equal(await direct().get('after'), 'v2');
  assert.equal((await stack.redoubt.readyz()).status, 200);
  // The client that started during the outage works too, without any help.
  await waitUntil('late client works', async () => (await late.get('after')) === 'v2', 5000, 20);

  // The subscriber stayed connected and Redoubt subscribed it again
  // upstream: a message published after recovery reaches it.
  await waitUntil('resubscribed subscriber receives', async () => {
    await c.publish('alerts', 'back');
    return received.includes('alerts:back');
  }, 5000, 50);
  t.diagnostic(`GET right after SIGKILL answered in ${r1.ms.toFixed(0)} ms; BLPOP 0 in ${b.ms.toFixed(0)} ms; ` +
    `recovered ${recoveredMs.toFixed(0)} ms after redis-server restarted`);
});

test('SIGSTOPped Redis (hangs, no error): a read is answered UNAVAILABLE within the deadline', async (t) => {
  // A second stack of our own: this one is paused, not killed.
  const own = await startStack();
  const c = new Redis({ host: '127.0.0.1', port: own.redoubt.port, maxRetriesPerRequest: 0 });
  c.on('error', () => {});
  try {
    assert.equal(await c.set('k', 'v'), 'OK');
    own.redis.proc.kill('SIGSTOP');
    const r = await timed(c.get('k'));
    assert.ok(r.err, `GET against a paused Redis answered ${JSON.stringify(r.value)}`);
    assert.match(r.err.message, /^UNAVAILABLE/, `GET against a paused Redis: ${r.err.message}`);
    assert.ok(r.ms < 1500, `GET against a paused Redis took ${r.ms.toFixed(0)} ms`);
    own.redis.proc.kill('SIGCONT');
    await waitUntil('GET works after SIGCONT', async () => (await c.get('k')) === 'v', 5000, 20);
    t.diagnostic(`GET against a paused Redis answered in ${r.ms.toFixed(0)} ms`);
  } finally {
    c.disconnect();
    try { own.redis.proc.kill('SIGCONT'); } catch { /* gone */ }
    await own.stop();
  }
});
