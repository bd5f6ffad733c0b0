// The BullMQ-through-an-outage scenario shared by
// test/app-bullmq-outage.test.js (one Redoubt) and
// test/app-bullmq-outage-two-redoubts.test.js (two in front of one Redis):
// producers (standard, delayed, prioritized, custom jobId, addBulk) adding
// before, during and after a 5 s SIGKILL of Redis, a Worker (concurrency 6,
// 50–200 ms per job) and QueueEvents, everything recorded; then the checks
// and figures both tests share. Not a test file itself (run.sh globs
// test/*.test.js).
import assert from 'node:assert/strict';
import Redis from 'ioredis';
import { Queue, QueueEvents, Worker } from 'bullmq';
import { sleep, waitUntil } from './harness.js';

export const REDIS_ARGS = ['--appendonly', 'yes', '--appendfsync', 'always', '--repl-diskless-sync-delay', '0'];
export const CONFIG = '[[keyspace]]\npattern = "bull:*"\npolicy = "durable"\n';
const OUTAGE_MS = 5000;
const CONCURRENCY = 6;
// What every single-job producer adds, and what each addBulk call mixes.
const SINGLE_KINDS = ['standard', 'delayed', 'prioritized', 'custom'];
const BULK_KINDS = ['standard', 'delayed', 'prioritized', 'custom'];

const REFUSED_NOT_EXECUTED = /^UNAVAILABLE/;
export const WRITER_RULE = /^UNAVAILABLE.*another Redoubt/;
// Redoubt's answer to a command sent to Redis whose connection broke before the reply.
const LOST_IN_FLIGHT = /^UNCERTAIN connection to redis lost before the reply/;
const REDOUBT_REPLY = /^(UNAVAILABLE|UNCERTAIN)|during an outage|not supported by the local store/;

let seq = 0;
/** One job as the producer builds it: its tag travels in the job's data. */
function jobSpec(tag, kind) {
  const n = ++seq;
  const data = { tag, n, ms: 50 + ((n * 37) % 151) };
  const opts = {};
  if (kind === 'delayed') opts.delay = 300 + (n % 4) * 300;
  if (kind === 'prioritized') opts.priority = 1 + (n % 8);
  if (kind === 'custom') opts.jobId = `cid-${tag}`;
  return { name: `work-${kind}`, data, opts, kind };
}

function expectedReturn(id, tag) {
  return { tag, id, done: `done:${tag}` };
}

/** A producer loop: one kind of add (or addBulk) every `pauseMs`, each recorded in `ledger`. */
function startProducer({ name, kind, queue, via, ledger, pauseMs, signal }) {
  const st = { stop: false, pending: null };
  let n = 0;
  st.done = (async () => {
    while (!st.stop && !signal.aborted) {
      n++;
      const specs = kind === 'bulk'
        ? BULK_KINDS.map((k, i) => jobSpec(`${name}-${n}.${i}`, k))
        : [jobSpec(`${name}-${n}`, kind)];
      const start = Date.now();
      const t0 = performance.now();
      const entries = specs.map((s) => ({
        via, producer: name, kind: s.kind, bulk: kind === 'bulk', tag: s.data.tag,
        customId: s.opts.jobId ?? null, start, end: null, ms: null, id: null, err: null,
      }));
      ledger.push(...entries);
      st.pending = entries;
      try {
        const jobs = kind === 'bulk'
          ? await queue.addBulk(specs.map(({ name: nm, data, opts }) => ({ name: nm, data, opts })))
          : [await queue.add(specs[0].name, specs[0].data, specs[0].opts)];
        const ms = performance.now() - t0;
        entries.forEach((e, i) => { e.ms = ms; e.end = Date.now(); e.id = jobs[i]?.id ?? null; });
      } catch (err) {
        const ms = performance.now() - t0;
        for (const e of entries) { e.ms = ms; e.end = Date.now(); e.err = err.message; }
      }
      st.pending = null;
      await sleep(pauseMs);
    }
  })();
  return st;
}

/** Polls /status until `pred(status)` holds; returns that status. */
async function statusWhen(redoubt, what, pred, timeoutMs) {
  let last = null;
  await waitUntil(what, async () => {
    last = await redoubt.status();
    return pred(last);
  }, timeoutMs, 10);
  return last;
}

function replicaReady(s) {
  const r = s.journal?.replica;
  return s.state === 'up' && r?.state === 'streaming' && (r.complete === undefined || r.complete === true);
}

const pct = (xs, p) => {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const short = (xs, n = 8) => JSON.stringify(xs.slice(0, n)) + (xs.length > n ? ` … (${xs.length} in all)` : '');

/**
 * The whole scenario against a stack: producers on `producerVias` (indexes
 * into stack.redoubts), the worker and QueueEvents on stack.redoubts[workerVia].
 * Returns everything recorded; asserts nothing itself.
 */
export async function runScenario(t, stack, { queueName, producerVias, workerVia, pauseMs }) {
  const closers = [];
  const conn = (i) => ({ host: '127.0.0.1', port: stack.redoubts[i].port });
  const ledger = [];
  const starts = []; // { id, tag, at, end }
  const inFlight = new Set();
  const completions = new Map(); // job id -> times the worker emitted 'completed'
  const failures = [];
  const workerErrors = []; // { at, msg }
  const eventsCompleted = new Map(); // job id -> returnvalue seen by QueueEvents
  const rec = { ledger, starts, completions, failures, workerErrors, eventsCompleted, closers, workerVia, timeline: {} };

  try {
    for (const r of stack.redoubts) {
      await statusWhen(r, `replica of ${r.port} streaming`, replicaReady, 20000);
    }

    const events = new QueueEvents(queueName, { connection: conn(workerVia), lastEventId: '0-0' });
    closers.push(() => events.close());
    events.on('completed', ({ jobId, returnvalue }) => eventsCompleted.set(jobId, returnvalue));
    events.on('error', () => {}); // reconnects are ioredis's; what matters is what it saw
    await events.waitUntilReady();

    const worker = new Worker(queueName, async (job) => {
      const s = { id: job.id, tag: job.data.tag, at: Date.now(), end: null };
      starts.push(s);
      inFlight.add(s);
      try {
        await sleep(job.data.ms);
      } finally {
        s.end = Date.now();
        inFlight.delete(s);
      }
      return expectedReturn(job.id, job.data.tag);
    }, { connection: conn(workerVia), concurrency: CONCURRENCY });
    closers.push(() => worker.close(true));
    worker.on('completed', (job) => completions.set(job.id, (completions.get(job.id) ?? 0) + 1));
    worker.on('failed', (job, err) => failures.push({ id: job?.id, msg: err.message, at: Date.now() }));
    worker.on('error', (err) => workerErrors.push({ at: Date.now(), msg: err.message }));
    await worker.waitUntilReady();

    const producers = [];
    for (const via of producerVias) {
      // One Queue per producer "process" (its own ioredis connection).
      for (const kind of [...SINGLE_KINDS, 'bulk']) {
        const queue = new Queue(queueName, { connection: conn(via) });
        closers.push(() => queue.close());
        await queue.waitUntilReady();
        producers.push(startProducer({
          name: `r${via}-${kind}`, kind, queue, via, ledger, pauseMs: kind === 'bulk' ? pauseMs * 4 : pauseMs, signal: t.signal,
        }));
      }
    }
    const stopProducers = async () => {
      for (const p of producers) p.stop = true;
      await Promise.race([Promise.all(producers.map((p) => p.done)), sleep(15000)]);
      rec.hungAdds = producers.filter((p) => p.pending).flatMap((p) => p.pending);
    };
    closers.push(stopProducers);

    // Before: adds resolve, jobs complete, and some are running at the kill.
    await waitUntil('adds and completions before the outage',
      () => ledger.filter((e) => e.id).length >= 60 && completions.size >= 20, 20000, 10);
    await waitUntil('jobs running on the worker', () => inFlight.size >= 2, 5000, 1);

    const killedAt = Date.now();
    await stack.redis.kill();
    // Redis is gone only once its process has exited: a command sent
    // until then may reach it and lose its reply (UNCERTAIN).
    const goneAt = Date.now();
    rec.runningAtKill = starts.filter((s) => s.at <= killedAt && (s.end === null || s.end > killedAt)).map((s) => s.id);
    rec.detectedAt = {};
    await Promise.all(stack.redoubts.map(async (r, i) => {
      const s = await statusWhen(r, `redoubt ${i} declares Redis down`, (x) => x.state === 'down', 5000);
      rec.detectedAt[i] = s.since_unix_ms;
    }));
    rec.writer = {};
    for (const [i, r] of stack.redoubts.entries()) rec.writer[i] = (await r.status()).journal?.writer ?? null;
    await sleep(Math.max(0, killedAt + OUTAGE_MS - Date.now())); // the outage itself
    const restartedAt = Date.now();
    await stack.redis.start();
    rec.upAt = {};
    rec.restored = {};
    await Promise.all(stack.redoubts.map(async (r, i) => {
      const s = await statusWhen(r, `redoubt ${i} Up with its journal replayed`,
        (x) => x.state === 'up' && x.journal.pending_commands === 0, 30000);
      rec.upAt[i] = s.since_unix_ms;
      // Keys it wrote back into Redis, judging Redis had lost them (shown:
      // a restore that races another instance's traffic re-runs jobs).
      rec.restored[i] = s.journal?.replica?.last_restore ?? null;
    }));
    const lastUp = Math.max(...Object.values(rec.upAt));

    // After: adds keep coming for a while once every instance is Up.
    await waitUntil('adds after recovery', () => ledger.filter((e) => e.start >= lastUp && e.end !== null).length >= 40, 20000, 10);
    await stopProducers();
    const stoppedAt = Date.now();

    // Drain: every resolved add completed and nothing left to run, read
    // straight from Redis. Not an assertion yet: on a deadline, the checks
    // below say what is missing.
    const direct = new Redis({ host: '127.0.0.1', port: stack.redis.port, maxRetriesPerRequest: 1 });
    direct.on('error', () => {});
    closers.push(async () => direct.disconnect());
    rec.direct = direct;
    const resolvedIds = [...new Set(ledger.filter((e) => e.id).map((e) => e.id))];
    const k = (s) => `bull:${queueName}:${s}`;
    rec.drained = await waitUntil('queue drained', async () => {
      // A job BullMQ failed because its moveToFinished got UNCERTAIN is
      // settled too: whether that was allowed is checked below.
      const settled = (id) => completions.has(id) || rec.failures.some((f) => f.id === id && LOST_IN_FLIGHT.test(f.msg));
      if (resolvedIds.some((id) => !settled(id))) return false;
      const [w, a, d, p] = await Promise.all([direct.llen(k('wait')), direct.llen(k('active')),
        direct.zcard(k('delayed')), direct.zcard(k('prioritized'))]);
      return w + a + d + p === 0;
    }, 25000, 50).then(() => true, () => false);
    rec.drainMs = Date.now() - stoppedAt;
    rec.eventsComplete = await waitUntil('QueueEvents saw every completion',
      () => resolvedIds.every((id) => eventsCompleted.has(id)), rec.drained ? 10000 : 1000, 20).then(() => true, () => false);
    rec.timeline = { killedAt, goneAt, restartedAt, lastUp, stoppedAt };
    rec.keys = k;
    return rec;
  } catch (e) {
    for (const [i, r] of stack.redoubts.entries()) logDiagnostic(t, `redoubt ${i}`, r.logTail(30));
    await closeAll(rec);
    throw e;
  }
}

/** Checks common to both tests; returns problems (strings) and prints the figures. */
export async function check(t, rec, { rejectionAllowed }) {
  const problems = [];
  const { ledger, starts, completions, direct } = rec;
  const resolved = ledger.filter((e) => e.id !== null);
  const rejected = ledger.filter((e) => e.err !== null);

  // Rejections: none once the instance the add went through had detected the outage.
  const allowedRejections = [];
  const badRejections = [];
  for (const e of rejected) {
    const why = rejectionAllowed(e);
    (why ? allowedRejections : badRejections).push({ tag: e.tag, via: e.via, why, err: e.err, msAfterKill: e.start - rec.timeline.killedAt });
  }
  if (badRejections.length) problems.push(`${badRejections.length} adds rejected after Redoubt detected the outage: ${short(badRejections, 5)}`);
  if (rec.hungAdds?.length) problems.push(`${rec.hungAdds.length} adds never settled: ${short(rec.hungAdds.map((e) => e.tag))}`);

  // Ids told to producers are unique, custom ids as given.
  const byId = new Map();
  for (const e of resolved) byId.set(e.id, [...(byId.get(e.id) ?? []), e.tag]);
  const sharedIds = [...byId].filter(([, tags]) => tags.length > 1);
  if (sharedIds.length) problems.push(`${sharedIds.length} job ids told to more than one add: ${short(sharedIds, 5)}`);
  const wrongCustom = resolved.filter((e) => e.customId !== null && e.id !== e.customId);
  if (wrongCustom.length) problems.push(`custom jobId not kept: ${short(wrongCustom.map((e) => [e.customId, e.id]))}`);

  // Processing: every resolved add exactly once, under its id, with its data.
  const startsById = new Map();
  for (const s of starts) startsById.set(s.id, [...(startsById.get(s.id) ?? []), s]);
  const never = resolved.filter((e) => !startsById.has(e.id));
  const twice = [...startsById].filter(([, ss]) => ss.length > 1);
  const wrongData = resolved.filter((e) => startsById.get(e.id)?.some((s) => s.tag !== e.tag));
  if (never.length) problems.push(`${never.length} resolved adds never processed: ${short(never.map((e) => `${e.id} (${e.tag}, ${e.kind})`))}`);
  if (twice.length) problems.push(`${twice.length} jobs processed more than once: ${short(twice.map(([id, ss]) => `${id} x${ss.length}`))}`);
  if (wrongData.length) problems.push(`${wrongData.length} jobs processed with another add's data: ${short(wrongData.map((e) => `${e.id} told to ${e.tag}, ran ${startsById.get(e.id).map((s) => s.tag)}`))}`);
  const multiCompleted = [...completions].filter(([, n]) => n > 1);
  if (multiCompleted.length) problems.push(`'completed' emitted more than once for ${short(multiCompleted)}`);

  // Jobs processed that no resolved add asked for.
  const resolvedTags = new Set(resolved.map((e) => e.tag));
  const rejectedByTag = new Map(rejected.map((e) => [e.tag, e]));
  const extra = starts.filter((s) => !resolvedTags.has(s.tag));
  const uncertainRan = extra.filter((s) => rejectedByTag.has(s.tag) && !REFUSED_NOT_EXECUTED.test(rejectedByTag.get(s.tag).err));
  const refusedRan = extra.filter((s) => rejectedByTag.has(s.tag) && REFUSED_NOT_EXECUTED.test(rejectedByTag.get(s.tag).err));
  const madeUp = extra.filter((s) => !rejectedByTag.has(s.tag));
  if (refusedRan.length) problems.push(`${refusedRan.length} jobs ran whose add was refused as not executed: ${short(refusedRan.map((s) => `${s.id} ${s.tag}: ${rejectedByTag.get(s.tag).err}`))}`);
  if (madeUp.length) problems.push(`${madeUp.length} jobs ran that no producer added: ${short(madeUp.map((s) => `${s.id} ${s.tag}`))}`);

  // Jobs running at the kill: processed once.
  const runningTwice = rec.runningAtKill.filter((id) => (startsById.get(id)?.length ?? 0) > 1);
  if (runningTwice.length) problems.push(`jobs running at the kill processed again: ${short(runningTwice)}`);

  // The worker's own scripts (moveToActive, moveToFinished, extendLock) never refused.
  // As for adds, a command in flight at the kill may get UNCERTAIN before
  // detection (printed below); what that did to its job is checked above
  // and in Redis below.
  // A command in flight at the kill may also get its UNCERTAIN after
  // detection: the broken connection and the failed probe are seen within
  // the same few milliseconds. Once Redis is declared down nothing is sent
  // to it, so a "connection lost" UNCERTAIN always answers a command sent
  // before; one arriving later than INFLIGHT_MS after detection is not that.
  // BullMQ fails the job whose moveToFinished got it: allowed only for a job
  // whose processor had returned by the kill, and only if the job is in
  // Redis's failed set with that reason (visible to the app, not lost).
  const INFLIGHT_MS = 1000;
  const inflightAtKill = (msg, at) => LOST_IN_FLIGHT.test(msg) && at <= rec.detectedAt[rec.workerVia] + INFLIGHT_MS;
  const firstDetect = Math.min(...Object.values(rec.detectedAt));
  const refusedWorker = rec.workerErrors.filter((e) => REDOUBT_REPLY.test(e.msg) && e.at >= rec.detectedAt[rec.workerVia] && !inflightAtKill(e.msg, e.at));
  if (refusedWorker.length) problems.push(`worker commands refused by Redoubt after detection (${refusedWorker.length}): ${short([...new Set(refusedWorker.map((e) => e.msg))], 4)}`);
  const finishedByKill = new Set(starts.filter((s) => s.end !== null && s.end <= rec.timeline.goneAt).map((s) => s.id));
  const failedInFlight = rec.failures.filter((f) => inflightAtKill(f.msg, f.at) && finishedByKill.has(f.id));
  const otherFailures = rec.failures.filter((f) => !failedInFlight.includes(f));
  if (otherFailures.length) problems.push(`jobs failed: ${short(otherFailures.map((f) => `${f.id}: ${f.msg}`))}`);
  // For a failure no rule explains: when its add and its processing ran,
  // relative to the kill and to each Redoubt's Up.
  const k0 = rec.timeline.killedAt;
  const rel = (at) => (at == null ? '-' : `kill${at - k0 >= 0 ? '+' : ''}${at - k0} ms`);
  // A job no rule explains: when its add and its processing ran, relative
  // to the kill and to each Redoubt's Up, and what Redis holds of it.
  const explain = async (what, id) => {
    const adds = ledger.filter((e) => e.id === id || e.customId === id)
      .map((e) => `add via ${e.via} ${e.kind}${e.bulk ? ' (bulk)' : ''} from ${rel(e.start)} to ${rel(e.end)}${e.err ? ` err ${e.err}` : ''}`);
    const runs = starts.filter((s) => s.id === id).map((s) => `processed from ${rel(s.at)} to ${rel(s.end)}`);
    t.diagnostic(`${what}: ${[...adds, ...runs].join('; ')}; Up at ${JSON.stringify(Object.fromEntries(Object.entries(rec.upAt).map(([k, v]) => [k, rel(v)])))}`);
    const hash = await direct.hgetall(rec.keys(id));
    const events = (await direct.xrange(rec.keys('events'), '-', '+'))
      .filter(([, fields]) => fields.includes(id))
      .map(([eid, fields]) => `${eid} ${fields.join(' ')}`.slice(0, 160));
    t.diagnostic(`  in Redis now: hash fields ${JSON.stringify(Object.keys(hash))}; events ${JSON.stringify(events)}`);
  };
  for (const f of otherFailures.slice(0, 3)) await explain(`failed ${f.id} at ${rel(f.at)}`, f.id);
  const failedSet = new Set(await direct.zrange(rec.keys('failed'), 0, -1));
  const failedInFlightLost = failedInFlight.filter((f) => !failedSet.has(f.id));
  if (failedInFlightLost.length) problems.push(`jobs failed by an in-flight UNCERTAIN but not in Redis's failed set: ${short(failedInFlightLost.map((f) => f.id))}`);
  const inFlightIds = new Set(failedInFlight.map((f) => f.id));
  if (failedInFlight.length) t.diagnostic(`jobs failed by BullMQ because their moveToFinished was in flight at the kill (UNCERTAIN, in Redis's failed set): ${short(failedInFlight.map((f) => f.id))}`);

  // Final state, straight from Redis.
  const k = rec.keys;
  const completedSet = new Set(await direct.zrange(k('completed'), 0, -1));
  const notCompleted = resolved.filter((e) => !completedSet.has(e.id) && !inFlightIds.has(e.id));
  if (notCompleted.length) problems.push(`${notCompleted.length} resolved adds not in Redis's completed set: ${short(notCompleted.map((e) => `${e.id} (${e.tag})`))}`);
  const hashes = await Promise.all(resolved.map((e) => direct.hgetall(k(e.id))));
  // A moveToActive in flight at the kill may have run in Redis (written to
  // its AOF) with its reply and its replication both lost: the worker's
  // 'error' is UNCERTAIN and names no job, Redoubt's copy never saw it, the
  // job is taken again from the copy during the outage, and the replay adds
  // a second start to Redis's count. Allowed: `ats` 2 for at most one job
  // per such worker error, a job Redis made active at the kill (its first
  // 'active' event), processed once (checked above).
  const lostFetches = rec.workerErrors.filter((e) => inflightAtKill(e.msg, e.at)).length;
  const firstActive = new Map();
  for (const [eid, fields] of await direct.xrange(k('events'), '-', '+')) {
    const f = {};
    for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i]] = fields[i + 1];
    if (f.event === 'active' && !firstActive.has(f.jobId)) firstActive.set(f.jobId, Number(eid.split('-')[0]));
  }
  const activeAtKill = (id) => Math.abs((firstActive.get(id) ?? -Infinity) - rec.timeline.killedAt) <= 100;
  const refetched = [];
  const badHash = [];
  resolved.forEach((e, i) => {
    const h = hashes[i];
    if (!completedSet.has(e.id)) return;
    let rv = null;
    let data = null;
    try { rv = JSON.parse(h.returnvalue); data = JSON.parse(h.data); } catch { /* reported below */ }
    const issues = [];
    try { assert.deepEqual(rv, expectedReturn(e.id, e.tag)); } catch { issues.push(`returnvalue ${h.returnvalue}`); }
    if (data?.tag !== e.tag) issues.push(`data ${h.data}`);
    // BullMQ's own record: moved to active (ats), finished (atm), found
    // stalled (stc). A moveToActive whose reply was lost leaves the job
    // active with nobody running it until the stalled check moves it back.
    if (h.ats === '2' && refetched.length < lostFetches && activeAtKill(e.id)) refetched.push(e.id);
    else if (h.ats !== '1') issues.push(`started ${h.ats} times (ats)`);
    // A moveToFinished in flight at the kill may have run in Redis before
    // BullMQ, told UNCERTAIN, failed the job: two finishes (checked above).
    if (h.atm !== '1' && !(inFlightIds.has(e.id) && h.atm === '2')) issues.push(`attempts made ${h.atm} (atm)`);
    if (h.stc && h.stc !== '0') issues.push(`found stalled ${h.stc} times (stc)`);
    if (!h.finishedOn) issues.push('no finishedOn');
    if (issues.length) badHash.push(`${e.id}: ${issues.join(', ')}`);
  });
  if (badHash.length) problems.push(`${badHash.length} completed jobs wrong in Redis: ${short(badHash, 5)}`);
  for (const b of badHash.slice(0, 3)) await explain(`wrong in Redis ${b}`, b.slice(0, b.indexOf(':')));
  if (refetched.length) t.diagnostic(`jobs started twice in Redis's count because a moveToActive in flight at the kill ran there unseen (${lostFetches} such worker errors): ${short(refetched)}`);
  const counts = {
    wait: await direct.llen(k('wait')), active: await direct.llen(k('active')),
    delayed: await direct.zcard(k('delayed')), prioritized: await direct.zcard(k('prioritized')),
    failed: await direct.zcard(k('failed')), completed: completedSet.size,
  };
  if (counts.wait + counts.active + counts.delayed + counts.prioritized + counts.failed - failedInFlight.length) {
    problems.push(`queue not drained in Redis ${rec.drainMs} ms after producers stopped: ${JSON.stringify(counts)}`);
    // What is left, and how each got there.
    const left = [...await direct.lrange(k('active'), 0, 4), ...await direct.lrange(k('wait'), 0, 4)];
    for (const id of left.slice(0, 4)) await explain(`left in active/wait ${id} (completed ${completedSet.has(id)})`, id);
  }
  // The id counter in Redis is past every numeric id told to a producer
  // (a replay that lost an INCR would hand the same ids out again).
  const maxId = Math.max(0, ...resolved.map((e) => Number(e.id)).filter(Number.isInteger));
  const counter = Number(await direct.get(k('id')));
  if (!(counter >= maxId)) problems.push(`bull:…:id in Redis is ${counter}, below the id ${maxId} told to a producer`);
  const missingEvents = resolved.filter((e) => completedSet.has(e.id) && !rec.eventsCompleted.has(e.id));
  if (missingEvents.length) problems.push(`QueueEvents missed ${missingEvents.length} completions: ${short(missingEvents.map((e) => e.id))}`);

  // Figures.
  const tl = rec.timeline;
  const lastUp = tl.lastUp;
  const during = ledger.filter((e) => e.start >= firstDetect && e.start < lastUp);
  const vias = [...new Set(ledger.map((e) => e.via))];
  for (const via of vias) {
    const mine = ledger.filter((e) => e.via === via);
    const d = mine.filter((e) => e.start >= rec.detectedAt[via] && e.start < rec.upAt[via]);
    t.diagnostic(`via redoubt ${via} (writer ${JSON.stringify(rec.writer[via])}): adds ${mine.length} ` +
      `(resolved ${mine.filter((e) => e.id).length}, rejected ${mine.filter((e) => e.err).length}); ` +
      `during its outage ${d.length} (resolved ${d.filter((e) => e.id).length}, rejected ${d.filter((e) => e.err).length}); ` +
      `detected ${rec.detectedAt[via] - tl.killedAt} ms after kill, Up ${rec.upAt[via] - tl.restartedAt} ms after restart; ` +
      `restored into Redis: ${rec.restored[via] ? JSON.stringify(rec.restored[via]) : 'nothing'}`);
  }
  const lat = ledger.filter((e) => e.ms !== null).map((e) => e.ms);
  const latDuring = during.filter((e) => e.ms !== null).map((e) => e.ms);
  t.diagnostic(`adds: ${ledger.length} (resolved ${resolved.length}, rejected ${rejected.length}); during the outage ${during.length}; ` +
    `latency p50/p99/max ${pct(lat, 50).toFixed(0)}/${pct(lat, 99).toFixed(0)}/${Math.max(0, ...lat).toFixed(0)} ms, ` +
    `during the outage max ${Math.max(0, ...latDuring).toFixed(0)} ms`);
  t.diagnostic(`by kind: ${JSON.stringify(Object.fromEntries([...new Set(ledger.map((e) => (e.bulk ? 'bulk:' : '') + e.kind))].map((kind) => {
    const es = ledger.filter((e) => (e.bulk ? 'bulk:' : '') + e.kind === kind);
    return [kind, `${es.filter((e) => e.id).length}/${es.length}`];
  })))} (resolved/all)`);
  t.diagnostic(`processor starts ${starts.length} for ${startsById.size} jobs; duplicates ${twice.length}; ` +
    `running at the kill ${rec.runningAtKill.length} (${short(rec.runningAtKill)}), processed again ${runningTwice.length}; ` +
    `ran although rejected UNCERTAIN ${uncertainRan.length}; drained ${rec.drained} in ${rec.drainMs} ms; Redis counts ${JSON.stringify(counts)}`);
  if (allowedRejections.length) t.diagnostic(`rejections allowed (${allowedRejections.length}): ${short(allowedRejections, 6)}`);
  if (badRejections.length) t.diagnostic(`distinct errors of rejections after detection: ${short([...new Set(badRejections.map((e) => e.err))], 6)}`);
  if (rec.workerErrors.length) t.diagnostic(`worker errors (${rec.workerErrors.length}), distinct: ${short([...new Set(rec.workerErrors.map((e) => e.msg))], 6)}`);
  return problems;
}

/** A log, one diagnostic line per line (t.diagnostic escapes newlines). */
export function logDiagnostic(t, name, text) {
  t.diagnostic(`--- ${name} log ---`);
  for (const line of text.split('\n')) if (line.trim()) t.diagnostic(line);
}

export async function closeAll(rec) {
  for (const close of (rec?.closers ?? []).reverse()) {
    await Promise.race([close().catch(() => {}), sleep(5000)]);
  }
}

