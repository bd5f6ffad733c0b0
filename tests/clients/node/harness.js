// Test harness: a real redis-server on a free port and the real redoubt
// binary in front of it, both started fresh for a test file and cleaned up
// (processes killed, temp dirs removed) when it ends, even on failure.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const BIN = process.env.TEST_REDOUBT_BIN || path.join(ROOT, 'target', 'debug', 'redoubt');

// Everything still alive or on disk, so an abnormal exit cleans up too.
const liveProcs = new Set();
const tempDirs = new Set();

function cleanupSync() {
  for (const p of liveProcs) {
    try { p.kill('SIGKILL'); } catch { /* already gone */ }
  }
  liveProcs.clear();
  for (const d of tempDirs) fs.rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}
process.on('exit', cleanupSync);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => { cleanupSync(); process.exit(128 + os.constants.signals[sig]); });
}

function mkTemp(prefix) {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.add(d);
  return d;
}

function rmTemp(d) {
  fs.rmSync(d, { recursive: true, force: true });
  tempDirs.delete(d);
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` (sync or async) until it returns truthy; throws on timeout. */
export async function waitUntil(what, cond, timeoutMs = 10000, everyMs = 10) {
  const deadline = Date.now() + timeoutMs;
  let lastErr;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v;
    } catch (e) {
      if (e && e.fatal) throw e;
      lastErr = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}` + (lastErr ? ` (last error: ${lastErr.message})` : ''));
    }
    await sleep(everyMs);
  }
}

/** Sends one inline command on a fresh TCP connection; resolves with the first reply line. */
export function rawCommand(port, line = 'PING', timeoutMs = 500) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    const done = (err, val) => {
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err); else resolve(val);
    };
    const timer = setTimeout(() => done(new Error(`no reply to ${line} on port ${port} within ${timeoutMs} ms`)), timeoutMs);
    sock.on('connect', () => sock.write(line + '\r\n'));
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      const i = buf.indexOf('\r\n');
      if (i >= 0) done(null, buf.slice(0, i));
    });
    sock.on('error', (e) => done(e));
    sock.on('close', () => done(new Error(`connection to ${port} closed without a reply`)));
  });
}

/**
 * MONITOR on a raw socket (ioredis's own monitor() races its handshake with
 * monitor lines under load). `commands` collects the lower-cased command
 * name of every line; resolves once Redis has answered +OK.
 */
export function rawMonitor(port) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const mon = { commands: [], close: () => sock.destroy() };
    let buf = '';
    let started = false;
    sock.on('connect', () => sock.write('MONITOR\r\n'));
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      let i;
      while ((i = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (!started) {
          if (line !== '+OK') { sock.destroy(); reject(new Error(`MONITOR answered ${line}`)); return; }
          started = true;
          resolve(mon);
          continue;
        }
        const m = /^\+\S+ \[[^\]]*\] "([^"]*)"/.exec(line);
        if (m) mon.commands.push(m[1].toLowerCase());
      }
    });
    sock.on('error', (e) => { if (!started) reject(e); });
  });
}

function logTail(file, n = 40) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-n).join('\n');
  } catch {
    return '(no log)';
  }
}

class Proc {
  constructor(name) {
    this.name = name;
    this.proc = null;
    this.exited = null;
  }

  _spawn(cmd, args, logFile, env) {
    const fd = fs.openSync(logFile, 'a');
    const proc = spawn(cmd, args, { stdio: ['ignore', fd, fd], env: env || process.env });
    fs.closeSync(fd);
    liveProcs.add(proc);
    this.proc = proc;
    this.exited = new Promise((resolve) => {
      proc.on('exit', (code, signal) => {
        liveProcs.delete(proc);
        resolve({ code, signal });
      });
      proc.on('error', (err) => {
        liveProcs.delete(proc);
        resolve({ code: null, signal: null, err });
      });
    });
    return proc;
  }

  get running() {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null && liveProcs.has(this.proc);
  }

  async signal(sig, graceMs = 5000) {
    if (!this.running) return;
    this.proc.kill(sig);
    const t = setTimeout(() => { try { this.proc.kill('SIGKILL'); } catch { /* gone */ } }, graceMs);
    await this.exited;
    clearTimeout(t);
  }

  /** Waits until `ready()` holds; fails fast (with the log) if the process dies first. */
  async _waitReady(what, ready, timeoutMs) {
    let dead = null;
    this.exited.then((r) => { dead = r; });
    await waitUntil(what, async () => {
      if (dead) throw Object.assign(new Error(`${this.name} exited early: ${JSON.stringify(dead)}`), { fatal: true });
      return ready();
    }, timeoutMs).catch((e) => {
      throw new Error(`${e.message}\n--- ${this.name} log (${this.log}) ---\n${logTail(this.log)}`);
    });
  }
}

export class RedisServer extends Proc {
  /** `args`: extra redis-server options, after the defaults so they win (e.g. `--appendonly yes`). */
  constructor({ args = [] } = {}) {
    super('redis-server');
    this.dir = mkTemp('redoubt-node-redis-');
    this.log = path.join(this.dir, 'redis.log');
    this.port = null;
    this.args = args;
  }

  /** Starts redis-server; on a restart it keeps the same port. */
  async start() {
    const fixedPort = this.port !== null;
    for (let attempt = 0; ; attempt++) {
      if (!fixedPort) this.port = await freePort();
      this._spawn('redis-server', [
        '--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
        '--dir', this.dir, '--daemonize', 'no', ...this.args,
      ], this.log);
      try {
        await this._waitReady(`redis-server on ${this.port}`,
          async () => (await rawCommand(this.port, 'PING')) === '+PONG', 10000);
        return this;
      } catch (e) {
        await this.signal('SIGKILL');
        // A free port can be taken between probing and binding: try another.
        if (fixedPort || attempt >= 2) throw e;
      }
    }
  }

  async kill() {
    await this.signal('SIGKILL');
  }

  async stop() {
    await this.signal('SIGKILL');
    rmTemp(this.dir);
  }
}

// Redoubt reads every REDOUBT_* variable as configuration and refuses to
// start on an unknown one; TEST_REDOUBT_BIN is not one of them, but keep the child's env minimal.
function redoubtEnv() {
  const env = { ...process.env };
  delete env.TEST_REDOUBT_BIN;
  return env;
}

export class Redoubt extends Proc {
  /**
   * `upstreamPort`: the Redis it fronts (its port, or a whole upstream URL
   * as a string), or `null` for standalone (the local
   * store serves everything). `config`: TOML text for `--config`
   * (`[[keyspace]]` can only come from a file).
   */
  constructor(upstreamPort, { env = {}, args = [], config = null } = {}) {
    super('redoubt');
    this.upstreamPort = upstreamPort;
    this.dir = mkTemp('redoubt-node-data-');
    this.log = path.join(this.dir, '..', path.basename(this.dir) + '.log');
    tempDirs.add(this.log);
    this.env = env;
    this.args = args;
    if (config !== null) {
      this.configFile = this.log.replace(/\.log$/, '.toml');
      fs.writeFileSync(this.configFile, config);
      tempDirs.add(this.configFile);
      this.args = ['--config', this.configFile, ...args];
    }
    this.port = null;
    this.admin = null;
  }

  async start() {
    if (!fs.existsSync(BIN)) {
      throw new Error(`redoubt binary not found at ${BIN}: run \`cargo build -p redoubt\` first or set TEST_REDOUBT_BIN`);
    }
    for (let attempt = 0; ; attempt++) {
      this.port = await freePort();
      this.admin = await freePort();
      // A port is a Redis on this host; a string is a whole URL
      // (redis+cluster://…).
      const url = typeof this.upstreamPort === 'string' ? this.upstreamPort : `redis://127.0.0.1:${this.upstreamPort}`;
      const upstream = this.upstreamPort === null ? [] : ['--upstream', url];
      const env = { ...redoubtEnv(), REDOUBT_HEALTH_INTERVAL_MS: '50', ...this.env };
      if (this.upstreamPort === null) delete env.REDOUBT_UPSTREAM;
      this._spawn(BIN, [
        'serve', ...upstream,
        '--listen', `127.0.0.1:${this.port}`, '--admin', `127.0.0.1:${this.admin}`,
        '--data-dir', this.dir, ...this.args,
      ], this.log, env);
      try {
        // Listening is not enough: wait until the prober has seen Redis and
        // PING is forwarded (before that Redoubt answers -UNAVAILABLE, or
        // +PONG itself when durable keyspaces are configured, hence /readyz).
        await this._waitReady(`redoubt on ${this.port} forwarding PING`,
          async () => (await rawCommand(this.port, 'PING')) === '+PONG'
            && (await this.readyz()).body.state === (this.upstreamPort === null ? 'standalone' : 'up'), 15000);
        return this;
      } catch (e) {
        await this.signal('SIGKILL');
        if (attempt >= 2) throw e;
      }
    }
  }

  async readyz() {
    const res = await fetch(`http://127.0.0.1:${this.admin}/readyz`);
    return { status: res.status, body: await res.json() };
  }

  /** `/status` on the admin port: state, journal depth, replay progress. */
  async status() {
    const res = await fetch(`http://127.0.0.1:${this.admin}/status`);
    if (!res.ok) throw new Error(`/status answered ${res.status}`);
    return res.json();
  }

  logTail(n) {
    return logTail(this.log, n);
  }

  async stop() {
    await this.signal('SIGTERM', 5000);
    rmTemp(this.dir);
    for (const f of [this.log, this.configFile]) {
      if (!f) continue;
      fs.rmSync(f, { force: true });
      tempDirs.delete(f);
    }
  }
}

/**
 * redis-server plus Redoubt in front of it, both answering. `opts`: Redoubt's,
 * plus `redisArgs` and `redoubts` (how many Redoubt instances, each with its
 * own data dir and so its own node id, in front of the same Redis; default 1).
 * `redoubt` is the first, `redoubts` all of them, in start order.
 */
export async function startStack({ redisArgs = [], redoubts: count = 1, ...opts } = {}) {
  const redis = new RedisServer({ args: redisArgs });
  const redoubts = [];
  try {
    await redis.start();
    for (let i = 0; i < count; i++) {
      const r = new Redoubt(redis.port, opts);
      redoubts.push(r);
      await r.start();
    }
  } catch (e) {
    for (const r of redoubts) await r.stop();
    await redis.stop();
    throw e;
  }
  return {
    redis,
    redoubt: redoubts[0],
    redoubts,
    async stop() {
      // Redoubts first: each must drain while its upstream still answers.
      for (const r of redoubts) await r.stop();
      await redis.stop();
    },
  };
}
