// Failover time seen by clients: ioredis's own Sentinel mode vs ioredis
// through Redoubt (redis+sentinel:// upstream, the keys durable), on one
// Sentinel set-up (a primary, two replicas, three Sentinels with
// down-after-milliseconds 1000), the primary killed with SIGKILL under
// four writers each. Prints, per client: the longest stretch with no write
// acknowledged, writes refused, the slowest reply, and acknowledged writes
// missing from the new primary afterwards.
//
//   TEST_REDOUBT_BIN=target/release/redoubt node tests/clients/node/sentinel-compare.js
//
// A figure for the README, not a test: run it on a quiet machine.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import Redis from 'ioredis';

const BIN = process.env.TEST_REDOUBT_BIN || 'target/release/redoubt';
const WRITERS = 4;
const BEFORE_MS = 3000;
const AFTER_MS = 12000;
const DOWN_AFTER = Number(process.env.DOWN_AFTER_MS || 1000);

const procs = [];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

function start(cmd, args, opts = {}) {
  const p = spawn(cmd, args, { stdio: 'ignore', ...opts });
  procs.push(p);
  return p;
}

async function waitPing(port) {
  for (let i = 0; i < 400; i++) {
    try {
      const out = execFileSync('redis-cli', ['-p', String(port), 'PING'], { stdio: ['ignore', 'pipe', 'ignore'] });
      if (out.toString().includes('PONG')) return;
    } catch {}
    await sleep(25);
  }
  throw new Error(`nothing answers on ${port}`);
}

const cli = (port, ...args) =>
  execFileSync('redis-cli', ['-p', String(port), ...args]).toString().trim();

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'sentinel-compare-'));
  const ports = [await freePort(), await freePort(), await freePort()];
  const servers = {};
  for (const [i, port] of ports.entries()) {
    const d = join(dir, `r${i}`);
    execFileSync('mkdir', ['-p', d]);
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', d,
      '--repl-diskless-sync-delay', '0'];
    if (i > 0) args.push('--replicaof', '127.0.0.1', String(ports[0]));
    servers[port] = start('redis-server', args);
    await waitPing(port);
  }
  const sentinelPorts = [];
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    const conf = join(dir, `sentinel${i}.conf`);
    writeFileSync(conf, `port ${port}\nbind 127.0.0.1\ndir ${dir}\n` +
      `sentinel monitor mymaster 127.0.0.1 ${ports[0]} 2\n` +
      `sentinel down-after-milliseconds mymaster ${DOWN_AFTER}\n` +
      'sentinel failover-timeout mymaster 10000\n');
    start('redis-server', [conf, '--sentinel']);
    await waitPing(port);
    sentinelPorts.push(port);
  }
  // Until every Sentinel knows the others and both replicas.
  for (const sp of sentinelPorts) {
    for (let i = 0; ; i++) {
      const m = cli(sp, 'SENTINEL', 'master', 'mymaster').split('\n');
      const f = (k) => m[m.indexOf(k) + 1];
      if (f('num-other-sentinels') === '2' && Number(f('num-slaves')) >= 2) break;
      if (i > 600) throw new Error('sentinels did not settle');
      await sleep(50);
    }
  }
  const rport = await freePort();
  const admin = await freePort();
  const rconf = join(dir, 'redoubt.toml');
  writeFileSync(rconf, `listen = "127.0.0.1:${rport}"\n` +
    `upstream = "redis+sentinel://${sentinelPorts.map((p) => `127.0.0.1:${p}`).join(',')}/mymaster"\n` +
    `data_dir = "${join(dir, 'redoubt')}"\n[admin]\nlisten = "127.0.0.1:${admin}"\n` +
    '[health]\ninterval_ms = 50\ntimeout_ms = 100\n' +
    '[[keyspace]]\npattern = "r:*"\npolicy = "durable"\n');
  start(BIN, ['serve', '--config', rconf], { stdio: ['ignore', 'ignore', 'inherit'] });
  await waitPing(rport);
  for (let i = 0; ; i++) {
    const s = await (await fetch(`http://127.0.0.1:${admin}/status`)).json().catch(() => ({}));
    if (s.state === 'up') break;
    if (i > 400) throw new Error('redoubt did not come up');
    await sleep(25);
  }

  const clients = {
    'ioredis, Sentinel mode': {
      make: () => new Redis({ sentinels: sentinelPorts.map((port) => ({ host: '127.0.0.1', port })), name: 'mymaster' }),
      prefix: 'io',
    },
    'ioredis through Redoubt': {
      make: () => new Redis({ port: rport, host: '127.0.0.1' }),
      prefix: 'r',
    },
  };
  let stop = false;
  const runs = [];
  for (const [name, c] of Object.entries(clients)) {
    const stats = { name, acks: [], errors: 0, slowest: 0, acked: [] };
    for (let w = 0; w < WRITERS; w++) {
      const conn = c.make();
      conn.on('error', () => {});
      runs.push((async () => {
        for (let n = 0; !stop; n++) {
          const key = `${c.prefix}:${w}:${n}`;
          const t0 = performance.now();
          try {
            await conn.set(key, 'v');
            const t1 = performance.now();
            stats.acks.push(t1);
            stats.acked.push(key);
            stats.slowest = Math.max(stats.slowest, t1 - t0);
          } catch {
            stats.errors++;
            stats.slowest = Math.max(stats.slowest, performance.now() - t0);
            await sleep(10);
          }
        }
        conn.disconnect();
      })());
    }
    c.stats = stats;
  }
  await sleep(BEFORE_MS);
  const killedAt = performance.now();
  servers[ports[0]].kill('SIGKILL');
  await sleep(AFTER_MS);
  stop = true;
  await Promise.all(runs);
  const primary = Number(cli(sentinelPorts[0], 'SENTINEL', 'get-master-addr-by-name', 'mymaster').split('\n')[1]);
  console.log(`primary killed; new primary on ${primary}; down-after-milliseconds ${DOWN_AFTER}`);
  console.log('| client | longest stretch with no write acknowledged | writes refused | slowest reply | acknowledged writes missing after |');
  console.log('|---|---|---|---|---|');
  for (const c of Object.values(clients)) {
    const s = c.stats;
    const acks = s.acks.sort((a, b) => a - b);
    let gap = 0;
    let prev = killedAt;
    for (const t of acks) {
      if (t > killedAt) { gap = Math.max(gap, t - prev); prev = t; }
    }
    let missing = 0;
    const check = new Redis({ port: primary });
    for (let i = 0; i < s.acked.length; i += 500) {
      const vals = await check.mget(s.acked.slice(i, i + 500));
      missing += vals.filter((v) => v !== 'v').length;
    }
    check.disconnect();
    console.log(`| ${s.name} | ${(gap / 1000).toFixed(2)} s | ${s.errors} | ${(s.slowest / 1000).toFixed(2)} s | ${missing} of ${s.acked.length} |`);
  }
}

try {
  await main();
} finally {
  for (const p of procs) p.kill('SIGKILL');
}
process.exit(0);
