// BullMQ, unchanged, through Redoubt: a Queue, a Worker and QueueEvents all
// connected to the proxy. BullMQ leans on Lua (EVALSHA), blocking commands
// (BZPOPMIN on the worker's blocking connection, XREAD BLOCK for events),
// INFO (version check), CLIENT SETNAME and MULTI.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Redis from 'ioredis';
import { Queue, QueueEvents, Worker } from 'bullmq';
import { startStack, waitUntil } from '../harness.js';

let stack;
const closers = [];

// Every command any ioredis client in this process sends (BullMQ's included),
// with how it ended, so we can assert the proxy carried BullMQ's real traffic.
// Recorded by name as written to the socket (ioredis may turn EVALSHA into
// EVAL for a script not yet sent on that socket).
const sent = []; // { name, sub, port, ok, err }
const origSendCommand = Redis.prototype.sendCommand;
Redis.prototype.sendCommand = function (command, stream) {
  const entry = { name: String(command.name).toLowerCase(), sub: String(command.args?.[0] ?? '').toLowerCase(), port: this.options.port };
  sent.push(entry);
  command.promise?.then(() => { entry.ok = true; }, (e) => { entry.err = e.message; });
  return origSendCommand.call(this, command, stream);
};

function connection() {
  return { host: '127.0.0.1', port: stack.redoubt.port };
}

before(async () => {
  // These tests are about what passes through, not about deadlines (those
  // are outage.test.js's, at the default 1000 ms): a loaded CI machine
  // running a debug build must not turn a slow 16 MiB SET or Lua call into
  // a (correct, per contract) -UNCERTAIN.
  stack = await startStack({ env: { REDOUBT_LIMITS_COMMAND_TIMEOUT_MS: '5000' } });
});

after(async () => {
  for (const close of closers.reverse()) await close().catch(() => {});
  Redis.prototype.sendCommand = origSendCommand;
  if (stack) await stack.stop();
});

describe('BullMQ through Redoubt', () => {
  const N = 200;
  const queueName = 'redoubt-jobs';
  let queue;
  let events;
  let addedIds;
  const processed = new Map(); // job id -> times the processor ran
  const completed = new Map(); // job id -> times 'completed' fired on the worker
  const completedEvents = new Map(); // job id -> returnvalue seen by QueueEvents
  const failures = [];

  test('200 jobs: each processed exactly once, return values stored', { timeout: 40000 }, async () => {
    queue = new Queue(queueName, { connection: connection() });
    closers.push(() => queue.close());
    events = new QueueEvents(queueName, { connection: connection(), lastEventId: '0-0' });
    closers.push(() => events.close());
    events.on('completed', ({ jobId, returnvalue }) => completedEvents.set(jobId, returnvalue));
    await queue.waitUntilReady();
    await events.waitUntilReady();

    // Half added one by one (concurrently), half in bulk.
    const single = await Promise.all(Array.from({ length: N / 2 }, (_, i) => queue.add('double', { n: i })));
    const bulk = await queue.addBulk(Array.from({ length: N / 2 }, (_, i) => ({ name: 'double', data: { n: N / 2 + i } })));
    addedIds = [...single, ...bulk].map((j) => j.id);
    assert.equal(new Set(addedIds).size, N, 'job ids are unique');
    assert.equal(await queue.getWaitingCount(), N);

    const worker = new Worker(queueName, async (job) => {
      processed.set(job.id, (processed.get(job.id) ?? 0) + 1);
      return { doubled: job.data.n * 2, id: job.id };
    }, { connection: connection(), concurrency: 10, drainDelay: 1 });
    closers.push(() => worker.close());
    worker.on('completed', (job) => completed.set(job.id, (completed.get(job.id) ?? 0) + 1));
    worker.on('failed', (job, err) => failures.push(`${job?.id}: ${err.message}`));
    worker.on('error', (err) => failures.push(`worker error: ${err.message}`));

    await waitUntil(`${N} completions`, () => completed.size >= N || failures.length > 0, 30000, 20);
    assert.deepEqual(failures, []);
    // Give a duplicate a chance to show up, then check exactly-once.
    await waitUntil('queue drained', async () => (await queue.getCompletedCount()) === N, 5000);
    assert.deepEqual([...completed.keys()].sort(), [...addedIds].sort(), 'completed ids = added ids');
    for (const [id, n] of completed) assert.equal(n, 1, `job ${id} completed ${n} times`);
    for (const [id, n] of processed) assert.equal(n, 1, `job ${id} processed ${n} times`);
    assert.equal(processed.size, N);
    const counts = await queue.getJobCounts('waiting', 'active', 'completed', 'failed', 'delayed');
    assert.deepEqual(counts, { waiting: 0, active: 0, completed: N, failed: 0, delayed: 0 });

    // Return values stored, readable through the proxy…
    const jobs = await queue.getJobs(['completed'], 0, -1);
    assert.equal(jobs.length, N);
    for (const job of jobs) {
      assert.deepEqual(job.returnvalue, { doubled: job.data.n * 2, id: job.id });
      assert.ok(job.finishedOn >= job.processedOn);
    }
    // …and really in Redis.
    const d = new Redis({ host: '127.0.0.1', port: stack.redis.port });
    closers.push(async () => d.disconnect());
    assert.equal(await d.zcard(`bull:${queueName}:completed`), N);
    const raw = await d.hget(`bull:${queueName}:${addedIds[7]}`, 'returnvalue');
    assert.deepEqual(JSON.parse(raw), { doubled: 14, id: addedIds[7] });

    // QueueEvents (XREAD BLOCK through the proxy) saw every completion.
    await waitUntil('QueueEvents saw all completions', () => completedEvents.size >= N, 10000, 20);
    assert.deepEqual([...completedEvents.keys()].sort(), [...addedIds].sort());
    const rv = completedEvents.get(addedIds[3]);
    assert.deepEqual(typeof rv === 'string' ? JSON.parse(rv) : rv, { doubled: 6, id: addedIds[3] });
  });

  test('BullMQ\'s Lua, blocking, INFO and CLIENT SETNAME went through the proxy and worked', (t) => {
    const viaProxy = sent.filter((e) => e.port === stack.redoubt.port);
    const ok = (pred) => viaProxy.filter((e) => pred(e) && e.ok);
    // EVAL/EVALSHA: every BullMQ script call succeeded (a NOSCRIPT is
    // answered by ioredis resending the script; nothing else may fail).
    const scripts = viaProxy.filter((e) => e.name === 'evalsha' || e.name === 'eval');
    assert.ok(scripts.length >= N * 2, `only ${scripts.length} script calls`);
    const scriptErrors = scripts.filter((e) => e.err && !/NOSCRIPT/.test(e.err));
    assert.deepEqual(scriptErrors, []);
    assert.ok(ok((e) => e.name === 'evalsha').length > 0, 'no EVALSHA succeeded');
    assert.ok(ok((e) => e.name === 'bzpopmin').length > 0, 'no BZPOPMIN completed');
    assert.ok(ok((e) => e.name === 'xread').length > 0, 'no XREAD completed');
    assert.ok(ok((e) => e.name === 'info').length > 0, 'no INFO answered');
    const setname = viaProxy.filter((e) => e.name === 'client' && e.sub === 'setname');
    assert.ok(setname.length > 0, 'BullMQ sent no CLIENT SETNAME');
    assert.deepEqual(setname.filter((e) => !e.ok), [], 'CLIENT SETNAME failed');
    const tally = {};
    for (const e of viaProxy) {
      const k = e.name === 'client' ? `client ${e.sub}` : e.name;
      tally[k] = tally[k] || { ok: 0, err: 0 };
      tally[k][e.ok ? 'ok' : e.err ? 'err' : 'pending'] = (tally[k][e.ok ? 'ok' : e.err ? 'err' : 'pending'] ?? 0) + 1;
    }
    t.diagnostic(`commands through the proxy: ${JSON.stringify(tally)}`);
    // No command of BullMQ's got a reply Redis would never send.
    const proxyErrors = viaProxy.filter((e) => e.err && /^(UNAVAILABLE|UNCERTAIN)/.test(e.err));
    assert.deepEqual(proxyErrors, []);
  });

  // Redoubt answers CLIENT LIST with its own clients and their names, so
  // BullMQ's discovery (getQueueEvents, getWorkers) works through it.
  test('CLIENT SETNAME is visible to BullMQ\'s CLIENT LIST discovery (queue.getQueueEvents)', async () => {
    const listeners = await queue.getQueueEvents();
    assert.equal(listeners.length, 1, `getQueueEvents() found ${JSON.stringify(listeners)}`);
  });
});
