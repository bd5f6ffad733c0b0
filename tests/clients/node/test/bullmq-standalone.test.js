// BullMQ, unchanged, against standalone Redoubt (no Redis at all): its Lua
// scripts (with cmsgpack and cjson), streams (the events stream, XREAD
// BLOCK for QueueEvents), BZPOPMIN and MULTI all run on the local store.
// Then Redoubt is killed with -9 and started again on its data dir: the
// finished jobs and their return values are still there.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { Queue, QueueEvents, Worker } from 'bullmq';
import { Redoubt, waitUntil } from '../harness.js';

const closers = [];
let redoubt;

after(async () => {
  for (const close of closers.reverse()) await close().catch(() => {});
  if (redoubt) await redoubt.stop();
});

test('standalone: every job added (standard, delayed, prioritized, custom id, bulk) processed once, and kept across kill -9', { timeout: 60000 }, async () => {
  redoubt = await new Redoubt(null).start();
  const connection = () => ({ host: '127.0.0.1', port: redoubt.port });
  const name = 'standalone-jobs';
  const queue = new Queue(name, { connection: connection() });
  closers.push(() => queue.close());
  const events = new QueueEvents(name, { connection: connection(), lastEventId: '0-0' });
  closers.push(() => events.close());
  const seen = new Set();
  events.on('completed', ({ jobId }) => seen.add(jobId));
  await queue.waitUntilReady();
  await events.waitUntilReady();

  const added = [];
  for (let i = 0; i < 10; i++) {
    added.push(await queue.add('std', { n: i }));
    added.push(await queue.add('late', { n: 100 + i }, { delay: 50 }));
    added.push(await queue.add('prio', { n: 200 + i }, { priority: 1 + (i % 3) }));
    added.push(await queue.add('named', { n: 300 + i }, { jobId: `custom-${i}` }));
  }
  added.push(...await queue.addBulk(Array.from({ length: 10 }, (_, i) => ({ name: 'bulk', data: { n: 400 + i } }))));
  const ids = added.map((j) => j.id);
  assert.equal(new Set(ids).size, ids.length, 'job ids are unique');
  assert.ok(ids.includes('custom-3'), 'a custom job id is kept');

  const runs = new Map();
  const failures = [];
  const worker = new Worker(name, async (job) => {
    runs.set(job.id, (runs.get(job.id) ?? 0) + 1);
    return { doubled: job.data.n * 2 };
  }, { connection: connection(), concurrency: 4, drainDelay: 1 });
  closers.push(() => worker.close());
  worker.on('failed', (job, err) => failures.push(`${job?.id}: ${err.message}`));
  worker.on('error', (err) => failures.push(`worker: ${err.message}`));
  await waitUntil('every job completed', async () => failures.length > 0 || (await queue.getCompletedCount()) === ids.length, 30000, 20);
  assert.deepEqual(failures, []);
  for (const id of ids) assert.equal(runs.get(id), 1, `job ${id} ran ${runs.get(id) ?? 0} times`);
  await waitUntil('QueueEvents saw every completion', () => seen.size >= ids.length, 10000, 20);
  assert.deepEqual([...seen].sort(), [...ids].sort());
  await worker.close();
  await queue.close();
  await events.close();

  // kill -9 and start again on the same data dir.
  await redoubt.signal('SIGKILL');
  await redoubt.start();
  const again = new Queue(name, { connection: connection() });
  closers.push(() => again.close());
  const counts = await again.getJobCounts('waiting', 'active', 'completed', 'failed', 'delayed', 'prioritized');
  assert.deepEqual(counts, { waiting: 0, active: 0, completed: ids.length, failed: 0, delayed: 0, prioritized: 0 });
  const job = await again.getJob('custom-3');
  assert.deepEqual(job.returnvalue, { doubled: 606 });
});
