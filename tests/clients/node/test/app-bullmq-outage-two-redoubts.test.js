// BullMQ, unchanged, through a 5 s Redis kill -9, as in app-bullmq-outage.test.js
// (same producers, worker, QueueEvents and checks: ../bullmq-scenario.js),
// with two Redoubt instances in front of the one Redis.
//
// Both have `bull:*` durable, producers on both, the worker
// on one (the instance holding the outage-writer lease). The rule (README,
// "Several Redoubts in front of one Redis"): during an outage only the
// lease holder takes durable writes; the other refuses them, as not
// executed, and goes on refusing them after Redis is back until the writer
// has replayed its journal (else its producers would take job ids the
// writer already handed out). Asserted: no add through the writer rejected after detection;
// adds through the other rejected only by that rule, only while it is not
// Up; job ids unique across both; every resolved add processed exactly once
// under its id.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, waitUntil } from '../harness.js';
import { CONFIG, REDIS_ARGS, WRITER_RULE, check, closeAll, logDiagnostic, runScenario } from '../bullmq-scenario.js';

test('BullMQ with two Redoubt instances in front of one Redis: ids unique across both, every resolved add processed exactly once', { timeout: 110000 }, async (t) => {
  const stack = await startStack({ redisArgs: REDIS_ARGS, config: CONFIG, redoubts: 2 });
  let rec;
  try {
    // Exactly one of them holds the outage-writer lease (the first to claim
    // it); the worker runs on that one, producers on both.
    const writers = await waitUntil('exactly one Redoubt holds the outage-writer lease', async () => {
      const w = await Promise.all(stack.redoubts.map(async (r) => (await r.status()).journal?.writer?.takes_outage_writes));
      return w.filter(Boolean).length === 1 ? w : null;
    }, 15000, 50);
    const writer = writers.indexOf(true);
    const other = 1 - writer;
    rec = await runScenario(t, stack, { queueName: 'shared-jobs', producerVias: [writer, other], workerVia: writer, pauseMs: 150 });
    const problems = await check(t, rec, {
      rejectionAllowed: (e) => {
        if (e.start < rec.detectedAt[e.via]) return 'before detection';
        // The other instance refuses durable writes while it is not Up, by the rule.
        if (e.via === other && e.start < rec.upAt[other] && WRITER_RULE.test(e.err)) return 'writer rule';
        return null;
      },
    });
    const resolvedOn = (via) => rec.ledger.filter((e) => e.via === via && e.id).length;
    t.diagnostic(`writer redoubt ${writer}, other ${other}: resolved adds ${resolvedOn(writer)} / ${resolvedOn(other)}`);
    if (problems.length) for (const [i, r] of stack.redoubts.entries()) logDiagnostic(t, `redoubt ${i}`, r.logTail(15));
    assert.deepEqual(problems, []);
  } finally {
    await closeAll(rec);
    await stack.stop();
  }
});
