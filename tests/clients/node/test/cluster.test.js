// ioredis in standalone mode through Redoubt in front of a real Redis
// Cluster (three primaries, three replicas), checked against the cluster
// itself through ioredis's own cluster client: what one writes, the other
// reads; and redis-cli's resharding under load shows the writers nothing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import Redis from 'ioredis';
import { RedisServer, Redoubt, freePort, waitUntil } from '../harness.js';

const nodes = [];
let redoubt;
let cluster;
const clients = [];

function through() {
  const c = new Redis({ host: '127.0.0.1', port: redoubt.port, maxRetriesPerRequest: 1 });
  c.on('error', () => {});
  clients.push(c);
  return c;
}

before(async () => {
  for (let i = 0; i < 6; i++) {
    const bus = await freePort();
    const n = new RedisServer({
      args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf',
        '--cluster-node-timeout', '2000', '--cluster-port', String(bus)],
    });
    await n.start();
    nodes.push(n);
  }
  execFileSync('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`),
    '--cluster-replicas', '1', '--cluster-yes'], { stdio: 'ignore' });
  for (const n of nodes) {
    await waitUntil(`cluster ok on ${n.port}`, async () => {
      const c = new Redis({ port: n.port, lazyConnect: true });
      try {
        await c.connect();
        return (await c.cluster('INFO')).includes('cluster_state:ok');
      } finally {
        c.disconnect();
      }
    }, 30000, 100);
  }
  cluster = new Redis.Cluster(nodes.slice(0, 3).map((n) => ({ host: '127.0.0.1', port: n.port })));
  cluster.on('error', () => {});
  redoubt = new Redoubt(`redis+cluster://127.0.0.1:${nodes[0].port},127.0.0.1:${nodes[1].port}`,
    { env: { REDOUBT_LIMITS_COMMAND_TIMEOUT_MS: '5000' } });
  await redoubt.start();
});

after(async () => {
  for (const c of clients) c.disconnect();
  if (cluster) cluster.disconnect();
  if (redoubt) await redoubt.stop();
  for (const n of nodes) await n.stop();
});

describe('ioredis through Redoubt in front of a cluster', () => {
  test('command families read back through the cluster client', async () => {
    const c = through();
    assert.equal(await c.set('s:1', 'v', 'EX', 100), 'OK');
    assert.equal(await c.hset('h:1', 'f', 'v', 'g', 'w'), 2);
    assert.equal(await c.rpush('l:1', 'a', 'b'), 2);
    assert.equal(await c.sadd('set:1', 'x'), 1);
    assert.equal(await c.zadd('z:1', 2, 'b', 1, 'a'), 2);
    const id = await c.xadd('st:1', '*', 'k', 'v');
    assert.equal(await cluster.get('s:1'), 'v');
    assert.deepEqual(await cluster.hgetall('h:1'), { f: 'v', g: 'w' });
    assert.deepEqual(await cluster.lrange('l:1', 0, -1), ['a', 'b']);
    assert.deepEqual(await cluster.smembers('set:1'), ['x']);
    assert.deepEqual(await cluster.zrange('z:1', 0, -1), ['a', 'b']);
    assert.deepEqual(await cluster.xrange('st:1', '-', '+'), [[id, ['k', 'v']]]);
    await cluster.set('d:1', 'from-cluster');
    assert.equal(await c.get('d:1'), 'from-cluster');
  });

  test('cross-slot MGET, MSET and DEL are split and merged', async () => {
    const c = through();
    const keys = Array.from({ length: 64 }, (_, i) => `mk:${i}`);
    const pairs = keys.flatMap((k) => [k, `v-${k}`]);
    assert.equal(await c.mset(...pairs), 'OK');
    assert.deepEqual(await c.mget(...keys, 'mk:none'), [...keys.map((k) => `v-${k}`), null]);
    for (const k of keys.slice(0, 8)) assert.equal(await cluster.get(k), `v-${k}`);
    assert.equal(await c.exists(...keys), 64);
    assert.equal(await c.del(...keys, 'mk:none'), 64);
    assert.equal(await cluster.exists(...keys.slice(0, 1)), 0);
    await assert.rejects(c.sunion('mk:1', 'mk:2'), /CROSSSLOT/);
  });

  test('pipelines, transactions and scripts', async () => {
    const c = through();
    const p = c.pipeline();
    for (let i = 0; i < 300; i++) p.incr(`pc:${i % 31}`);
    const replies = await p.exec();
    const seen = {};
    replies.forEach(([err, v], i) => {
      assert.equal(err, null);
      seen[i % 31] = (seen[i % 31] || 0) + 1;
      assert.equal(v, seen[i % 31]);
    });
    const tx = await c.multi().incrby('{acct}.n', 5).rpush('{acct}.log', 'x').exec();
    assert.deepEqual(tx, [[null, 5], [null, 1]]);
    c.defineCommand('bump', { numberOfKeys: 1, lua: "return redis.call('INCRBY', KEYS[1], ARGV[1])" });
    for (const k of ['sc:a', 'sc:b', 'sc:c', 'sc:d', 'sc:e', 'sc:f']) {
      assert.equal(await c.bump(k, 3), 3);
      assert.equal(await cluster.get(k), '3');
    }
  });

  test('resharding under load: no error, no lost write', async () => {
    const writers = Array.from({ length: 4 }, () => through());
    let stop = false;
    const acked = new Map();
    const errors = [];
    const work = writers.map(async (c, w) => {
      for (let i = 0; !stop; i++) {
        const key = `rs:${w}:${i % 300}`;
        try {
          const v = await c.incr(key);
          acked.set(key, (acked.get(key) || 0) + 1);
          if (v !== acked.get(key)) errors.push(`${key}: ${v} after ${acked.get(key) - 1}`);
        } catch (e) {
          errors.push(`${key}: ${e.message}`);
        }
      }
    });
    const masters = [];
    for (const n of nodes) {
      const d = new Redis({ port: n.port });
      const [role] = await d.role();
      if (role === 'master') masters.push({ port: n.port, id: await d.cluster('MYID') });
      d.disconnect();
    }
    const [from, to] = masters;
    execFileSync('redis-cli', ['--cluster', 'reshard', `127.0.0.1:${from.port}`,
      '--cluster-from', from.id, '--cluster-to', to.id,
      '--cluster-slots', '1500', '--cluster-yes'], { stdio: 'ignore' });
    stop = true;
    await Promise.all(work);
    assert.deepEqual(errors.slice(0, 5), []);
    assert.ok(acked.size > 0);
    for (const [k, n] of acked) assert.equal(await cluster.get(k), String(n), k);
  });
});
