// BullMQ, unchanged, as a production app runs it (ioredis defaults, a Queue
// per producer process, a Worker with concurrency 6 whose processor takes
// 50–200 ms, QueueEvents awaiting results), all through Redoubt with
// `bull:*` durable, while Redis (AOF, appendfsync always) is SIGKILLed for
// 5 s and restarted on the same port.
//
// Producers add continuously before, during and after the outage: standard
// `add`, delayed, prioritized, with a custom `jobId`, and `addBulk` mixing
// all four. Every add that resolved (with the id its producer was told) and
// every add that rejected (with the error) is recorded; the processor
// records every start per job id.
//
// Asserted, after recovery and the queue draining:
//  - no add rejected once Redoubt had detected the outage (rejections in the
//    first moments, before detection, are allowed and printed);
//  - job ids told to producers are unique; every resolved add was processed
//    exactly once, under the id its producer was told (the processor sees
//    the producer's own tag in the job's data), custom ids as given;
//  - no job was processed that was refused as "not executed" (UNAVAILABLE);
//  - no job running at the kill was processed twice;
//  - the worker's own scripts were never refused by Redoubt after detection;
//  - read straight from Redis: every resolved job is in the completed set
//    with its return value, started once (`ats` 1, `atm` 1, never stalled),
//    wait/active/delayed/prioritized/failed are empty, and the id counter
//    is past every id told to a producer;
//  - QueueEvents (XREAD BLOCK) saw every completion.
// Figures (adds during the outage, add latency, duplicates, jobs running at
// the kill, detection and recovery times) are printed as diagnostics.
// The scenario and checks are in ../bullmq-scenario.js, shared with
// app-bullmq-outage-two-redoubts.test.js.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startStack } from '../harness.js';
import { CONFIG, REDIS_ARGS, check, closeAll, logDiagnostic, runScenario } from '../bullmq-scenario.js';

test('BullMQ through a 5 s Redis kill -9: every resolved add processed exactly once, no add refused after detection', { timeout: 110000 }, async (t) => {
  const stack = await startStack({ redisArgs: REDIS_ARGS, config: CONFIG });
  let rec;
  try {
    rec = await runScenario(t, stack, { queueName: 'outage-jobs', producerVias: [0], workerVia: 0, pauseMs: 100 });
    const problems = await check(t, rec, {
      // Allowed: an add started before Redoubt detected the outage.
      rejectionAllowed: (e) => (e.start < rec.detectedAt[e.via] ? 'before detection' : null),
    });
    if (problems.length) logDiagnostic(t, 'redoubt', stack.redoubt.logTail(20));
    assert.deepEqual(problems, []);
  } finally {
    await closeAll(rec);
    await stack.stop();
  }
});
