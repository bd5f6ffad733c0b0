// ioredis, unchanged, talking to Redis through Redoubt. ioredis 6 speaks
// RESP3 by default (HELLO 3 on connect, then CLIENT SETINFO); one test uses
// RESP2 explicitly.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import Redis from 'ioredis';
import { rawMonitor, startStack, waitUntil } from '../harness.js';

let stack;
const clients = [];

/** A client of Redoubt (the proxy), as an application would configure it. */
function proxy(opts = {}) {
  const c = new Redis({ host: '127.0.0.1', port: stack.redoubt.port, maxRetriesPerRequest: 1, ...opts });
  c.on('error', () => {}); // surfaced through rejected commands instead
  clients.push(c);
  return c;
}

/** A client of redis-server itself, to check what really landed there. */
function direct(opts = {}) {
  const c = new Redis({ host: '127.0.0.1', port: stack.redis.port, maxRetriesPerRequest: 1, ...opts });
  c.on('error', () => {});
  clients.push(c);
  return c;
}

before(async () => {
  // These tests are about what passes through, not about deadlines (those
  // are outage.test.js's, at the default 1000 ms): a loaded CI machine
  // running a debug build must not turn a slow 16 MiB SET or Lua call into
  // a (correct, per contract) -UNCERTAIN.
  stack = await startStack({ env: { REDOUBT_LIMITS_COMMAND_TIMEOUT_MS: '5000' } });
});

after(async () => {
  for (const c of clients) c.disconnect();
  if (stack) await stack.stop();
});

describe('ioredis through Redoubt', () => {
  test('strings', async () => {
    const c = proxy();
    assert.equal(await c.set('s', 'v'), 'OK');
    assert.equal(await c.get('s'), 'v');
    assert.equal(await c.incrby('n', 3), 3);
    assert.equal(await c.incrbyfloat('f', '1.5'), '1.5');
    assert.equal(await c.append('s', 'w'), 2);
    assert.equal(await c.mset({ m1: 'a', m2: 'b' }), 'OK');
    assert.deepEqual(await c.mget('m1', 'nope', 'm2'), ['a', null, 'b']);
    assert.equal(await c.set('ex', 'x', 'EX', 100), 'OK');
    const ttl = await c.ttl('ex');
    assert.ok(ttl > 90 && ttl <= 100, `ttl ${ttl}`);
    assert.equal(await c.set('s', 'other', 'NX'), null);
    assert.equal(await c.getrange('s', 0, 0), 'v');
    const bin = Buffer.from([0, 255, 13, 10, 36, 42, 0]); // NUL, CRLF, RESP markers
    await c.set('bin', bin);
    assert.deepEqual(await c.getBuffer('bin'), bin);
    // The write really went to Redis.
    const d = direct();
    assert.equal(await d.get('s'), 'vw');
    assert.deepEqual(await d.getBuffer('bin'), bin);
    // Errors from Redis come back as errors, with Redis's text.
    await c.rpush('alist', 'x');
    await assert.rejects(c.incr('alist'), /^ReplyError: WRONGTYPE|WRONGTYPE/);
    await assert.rejects(c.call('get'), /wrong number of arguments/i);
  });

  test('hashes, lists, sets, sorted sets', async () => {
    const c = proxy();
    assert.equal(await c.hset('h', { a: '1', b: '2' }), 2);
    assert.deepEqual(await c.hgetall('h'), { a: '1', b: '2' });
    assert.equal(await c.hincrby('h', 'a', 10), 11);
    assert.equal(await c.hdel('h', 'b', 'zz'), 1);
    assert.deepEqual(await c.hkeys('h'), ['a']);
    assert.deepEqual(await c.hgetall('missing-hash'), {});

    assert.equal(await c.rpush('l', 'x', 'y', 'z'), 3);
    assert.equal(await c.lpush('l', 'w'), 4);
    assert.deepEqual(await c.lrange('l', 0, -1), ['w', 'x', 'y', 'z']);
    assert.equal(await c.lpop('l'), 'w');
    assert.deepEqual(await c.rpop('l', 2), ['z', 'y']);
    assert.equal(await c.llen('l'), 1);

    assert.equal(await c.sadd('set1', 'a', 'b', 'c'), 3);
    assert.equal(await c.sadd('set2', 'b', 'c', 'd'), 3);
    assert.deepEqual((await c.smembers('set1')).sort(), ['a', 'b', 'c']);
    assert.equal(await c.sismember('set1', 'a'), 1);
    assert.equal(await c.sismember('set1', 'z'), 0);
    assert.deepEqual((await c.sinter('set1', 'set2')).sort(), ['b', 'c']);

    assert.equal(await c.zadd('z', 1, 'a', 2, 'b', 3, 'c'), 3);
    assert.deepEqual(await c.zrange('z', 0, -1, 'WITHSCORES'), ['a', '1', 'b', '2', 'c', '3']);
    assert.equal(await c.zincrby('z', 5, 'a'), '6');
    assert.deepEqual(await c.zrangebyscore('z', 2, '(6'), ['b', 'c']);
    assert.equal(await c.zscore('z', 'b'), '2');
    assert.deepEqual(await c.zpopmin('z'), ['b', '2']);

    const d = direct();
    assert.deepEqual(await d.hgetall('h'), { a: '11' });
    assert.deepEqual(await d.lrange('l', 0, -1), ['x']);
    assert.equal(await d.scard('set2'), 3);
    assert.deepEqual(await d.zrange('z', 0, -1), ['c', 'a']);
  });

  test('pipeline: 500 commands, replies in order, an error in the middle', async () => {
    const c = proxy();
    const p = c.pipeline();
    for (let i = 0; i < 250; i++) p.set(`p:${i}`, String(i));
    p.hset('p:hash', 'f', 'v');
    p.incr('p:hash'); // WRONGTYPE, at position 251
    for (let i = 0; i < 248; i++) p.get(`p:${i}`);
    const res = await p.exec();
    assert.equal(res.length, 500);
    for (let i = 0; i < 250; i++) assert.deepEqual(res[i], [null, 'OK']);
    assert.deepEqual(res[250], [null, 1]);
    assert.match(res[251][0].message, /^WRONGTYPE/);
    for (let i = 0; i < 248; i++) assert.deepEqual(res[252 + i], [null, String(i)], `reply ${252 + i}`);
  });

  test('multi/exec, EXECABORT, WATCH conflict', async () => {
    const c = proxy();
    const res = await c.multi().incr('t').incr('t').get('t').exec();
    assert.deepEqual(res, [[null, 1], [null, 2], [null, '2']]);

    // A runtime error inside EXEC fails only that command.
    await c.set('t:str', 'x');
    const res2 = await c.multi().incr('t:str').set('t:after', 'y').exec();
    assert.match(res2[0][0].message, /not an integer/);
    assert.deepEqual(res2[1], [null, 'OK']);

    // A command Redis refuses at queue time aborts the whole transaction.
    await assert.rejects(c.multi().set('t:never', 'x').call('set', 'only-one-arg').exec(), /EXECABORT/);
    const d = direct();
    assert.equal(await d.exists('t:never'), 0);

    // Optimistic locking: a concurrent writer between WATCH and EXEC wins.
    await c.set('w', 'start');
    assert.equal(await c.watch('w'), 'OK');
    await d.set('w', 'theirs');
    assert.equal(await c.multi().set('w', 'mine').exec(), null);
    assert.equal(await d.get('w'), 'theirs');
    // And without interference the same pattern commits.
    await c.watch('w');
    assert.deepEqual(await c.multi().set('w', 'mine').exec(), [[null, 'OK']]);
    assert.equal(await d.get('w'), 'mine');
  });

  test('Lua via defineCommand: EVAL, then EVALSHA, NOSCRIPT falls back to EVAL', async (t) => {
    const c = proxy();
    c.defineCommand('addAndGet', {
      numberOfKeys: 1,
      lua: "redis.call('INCRBY', KEYS[1], ARGV[1]); return {redis.call('GET', KEYS[1]), ARGV[2]}",
    });
    const d = direct();
    const monitor = await rawMonitor(stack.redis.port);
    t.after(() => monitor.close());
    const scriptCalls = () => monitor.commands.filter((n) => n === 'eval' || n === 'evalsha');
    let seenBefore = 0;
    const next = (n) => waitUntil(`${n} script calls seen by Redis`, () => scriptCalls().length >= seenBefore + n, 3000)
      .then(() => { const got = scriptCalls().slice(seenBefore); seenBefore += got.length; return got; });

    assert.deepEqual(await c.addAndGet('lua:n', 5, 'tag'), ['5', 'tag']); // first use on the socket: EVAL
    assert.deepEqual(await c.addAndGet('lua:n', 2, 'tag'), ['7', 'tag']); // EVALSHA, script cached
    assert.deepEqual(await next(2), ['eval', 'evalsha']);

    // Redis forgets its scripts: EVALSHA gets NOSCRIPT through Redoubt and
    // ioredis resends the script with EVAL.
    assert.equal(await d.script('FLUSH'), 'OK');
    assert.deepEqual(await c.addAndGet('lua:n', 1, 'again'), ['8', 'again']);
    assert.deepEqual(await next(2), ['evalsha', 'eval']);
    assert.equal(await d.get('lua:n'), '8');

    // Plain EVAL/EVALSHA/SCRIPT LOAD too, and a Lua error comes back as an error.
    const sha = await c.script('LOAD', 'return ARGV[1]');
    assert.equal(await c.evalsha(sha, 0, 'hi'), 'hi');
    await assert.rejects(c.eval("return redis.error_reply('MYERR boom')", 0), /MYERR boom/);
    monitor.close();
  });

  test('BLPOP is woken by another client; BLPOP times out with nil', async () => {
    const waiter = proxy();
    const pusher = proxy();
    const d = direct();
    const started = Date.now();
    const pending = waiter.blpop('bq', 10);
    // Wait until the BLPOP is really blocked inside Redis.
    await waitUntil('BLPOP blocked in redis', async () => /cmd=blpop/.test(await d.client('LIST')), 5000);
    assert.equal(await pusher.rpush('bq', 'job-1'), 1);
    assert.deepEqual(await pending, ['bq', 'job-1']);
    assert.ok(Date.now() - started < 5000, 'woken, not timed out');
    assert.equal(await d.llen('bq'), 0);

    const t0 = Date.now();
    assert.equal(await waiter.blpop('bq-empty', 0.3), null);
    const took = Date.now() - t0;
    assert.ok(took >= 250 && took < 2500, `BLPOP 0.3 s took ${took} ms`);
    // The blocking client is still usable afterwards.
    assert.equal(await waiter.ping(), 'PONG');
  });

  test('pub/sub: subscribe on one connection, publish on another', async () => {
    const sub = proxy();
    const pub = proxy();
    const got = [];
    sub.on('message', (ch, msg) => got.push(['message', ch, msg]));
    sub.on('pmessage', (pat, ch, msg) => got.push(['pmessage', pat, ch, msg]));
    assert.equal(await sub.subscribe('news', 'sport'), 2);
    assert.equal(await sub.psubscribe('n*'), 3);
    // Both subscriptions reached Redis: one receiver for the channel, one for the pattern.
    assert.equal(await pub.publish('news', 'hello'), 2);
    assert.equal(await pub.publish('sport', 'goal'), 1);
    assert.equal(await pub.publish('nothing-listens', 'x'), 1); // matches n*
    await waitUntil('messages', () => got.length >= 4, 3000);
    assert.deepEqual(got.filter((m) => m[0] === 'message'), [['message', 'news', 'hello'], ['message', 'sport', 'goal']]);
    assert.deepEqual(got.filter((m) => m[0] === 'pmessage'),
      [['pmessage', 'n*', 'news', 'hello'], ['pmessage', 'n*', 'nothing-listens', 'x']]);
    const numsub = await direct().pubsub('NUMSUB', 'news', 'sport');
    assert.deepEqual(numsub, ['news', 1, 'sport', 1]);

    // Leaving pub/sub: the same connection runs ordinary commands again.
    // (Channels named explicitly: ioredis 6.0.0's argument-less UNSUBSCRIBE
    // never resolves, against redis-server directly as well.)
    assert.equal(await sub.unsubscribe('news', 'sport'), 1);
    assert.equal(await sub.punsubscribe('n*'), 0);
    assert.equal(await pub.publish('news', 'nobody'), 0);
    assert.equal(await sub.set('after-sub', '1'), 'OK');
    assert.equal(await sub.get('after-sub'), '1');
  });

  test('SELECT through the db option lands in that db; sessions stay apart', async () => {
    const c3 = proxy({ db: 3 });
    const c0 = proxy();
    assert.equal(await c3.set('dbkey', 'in-3'), 'OK');
    assert.equal(await c0.set('dbkey', 'in-0'), 'OK');
    // Interleave the two sessions so they share Redoubt's pooled connections.
    const ops = [];
    for (let i = 0; i < 50; i++) ops.push(c3.get('dbkey'), c0.get('dbkey'));
    const vals = await Promise.all(ops);
    for (let i = 0; i < vals.length; i++) assert.equal(vals[i], i % 2 === 0 ? 'in-3' : 'in-0');
    assert.equal(await direct({ db: 3 }).get('dbkey'), 'in-3');
    assert.equal(await direct({ db: 0 }).get('dbkey'), 'in-0');
    assert.equal(await direct({ db: 3 }).dbsize(), 1);
    // An explicit SELECT mid-session moves only this client.
    assert.equal(await c0.select(5), 'OK');
    await c0.set('k5', 'v');
    assert.equal(await direct({ db: 5 }).get('k5'), 'v');
    assert.equal(await c3.get('k5'), null);
  });

  test('connectionName (CLIENT SETNAME) is kept; RESP2 client works too', async () => {
    const named = proxy({ connectionName: 'node-worker-1' });
    assert.equal(await named.client('GETNAME'), 'node-worker-1');
    assert.equal(await named.client('SETNAME', 'renamed'), 'OK');
    assert.equal(await named.client('GETNAME'), 'renamed');
    assert.equal(typeof (await named.client('ID')), 'number');

    const r2 = proxy({ protocol: 2 });
    await r2.hset('r2h', 'f', 'v');
    assert.deepEqual(await r2.hgetall('r2h'), { f: 'v' });
    assert.equal(await r2.zadd('r2z', '1.5', 'm'), 1);
    assert.equal(await r2.zscore('r2z', 'm'), '1.5');
    assert.equal(await r2.ping(), 'PONG');
  });

  test('a 16 MiB value round-trips byte for byte', async () => {
    const c = proxy();
    const big = crypto.randomBytes(16 * 1024 * 1024);
    assert.equal(await c.set('big', big), 'OK');
    const back = await c.getBuffer('big');
    assert.equal(back.length, big.length);
    assert.ok(back.equals(big), '16 MiB value differs after the round trip');
    assert.equal(await direct().strlen('big'), big.length);
    // Two at once on different clients, interleaved with small commands.
    const c2 = proxy();
    const [a, b, p] = await Promise.all([c.getBuffer('big'), c2.getBuffer('big'), c2.ping()]);
    assert.ok(a.equals(big) && b.equals(big));
    assert.equal(p, 'PONG');
  });
});
