#!/usr/bin/env python3
"""Generate crates/resp/src/command_table.rs from a real redis-server.

Starts redis-server on a free port (or uses --port of a running one), reads
COMMAND INFO and COMMAND DOCS, and writes the command table as Rust data.
Run it again when targeting a newer Redis:

    python3 scripts/gen-command-table.py [--port N] [--out PATH]
"""
import argparse, os, socket, subprocess, sys, tempfile, time

FLAG_BITS = [
    "write", "readonly", "denyoom", "module", "admin", "pubsub", "noscript",
    "blocking", "loading", "stale", "skip_monitor", "skip_slowlog", "asking",
    "fast", "no_auth", "may_replicate", "no_mandatory_keys", "no_multi",
    "movablekeys", "allow_busy",
]
KEY_FLAG_BITS = [
    "RW", "RO", "OW", "RM", "access", "update", "insert", "delete",
    "not_key", "incomplete", "variable_flags",
]


# COMMAND INFO hides may_replicate on purpose (Redis's server.c); these
# are the commands whose src/commands/*.json carry it in Redis 7.0.
HIDDEN_MAY_REPLICATE = {"eval", "evalsha", "fcall", "pfcount", "publish", "spublish"}


def read_reply(f):
    line = f.readline()
    if not line:
        raise EOFError
    t, rest = line[:1], line[1:-2]
    if t in (b"+", b"("):
        return rest.decode()
    if t == b"-":
        raise RuntimeError(rest.decode())
    if t == b":":
        return int(rest)
    if t in (b"$", b"=", b"!"):
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode()
    if t in (b"*", b"~", b">"):
        n = int(rest)
        return None if n < 0 else [read_reply(f) for _ in range(n)]
    if t == b"%":
        n = int(rest)
        return {read_reply(f): read_reply(f) for _ in range(n)}
    if t == b"_":
        return None
    if t == b"#":
        return rest == b"t"
    if t == b",":
        return float(rest)
    raise RuntimeError("unexpected reply type %r" % t)


def command(sock, f, *args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    sock.sendall(out)
    return read_reply(f)


def pairs(lst):
    if isinstance(lst, dict):
        return lst
    return {lst[i]: lst[i + 1] for i in range(0, len(lst), 2)}


def rust_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def flags_expr(names, table, prefix):
    bits = [prefix + n.upper() for n in names if n in table]
    return " | ".join(bits) if bits else "0"


def key_spec(spec):
    spec = pairs(spec)
    bs = pairs(spec["begin_search"])
    if bs["type"] == "index":
        begin = "BeginSearch::Index(%d)" % pairs(bs["spec"])["index"]
    elif bs["type"] == "keyword":
        k = pairs(bs["spec"])
        begin = "BeginSearch::Keyword { keyword: %s, start_from: %d }" % (rust_str(k["keyword"]), k["startfrom"])
    else:
        begin = "BeginSearch::Unknown"
    fk = pairs(spec["find_keys"])
    if fk["type"] == "range":
        r = pairs(fk["spec"])
        find = "FindKeys::Range { last_key: %d, step: %d, limit: %d }" % (r["lastkey"], r["keystep"], r["limit"])
    elif fk["type"] == "keynum":
        r = pairs(fk["spec"])
        find = "FindKeys::Keynum { keynum_idx: %d, first_key: %d, step: %d }" % (r["keynumidx"], r["firstkey"], r["keystep"])
    else:
        find = "FindKeys::Unknown"
    kf = flags_expr(spec.get("flags", []), KEY_FLAG_BITS, "K_")
    return "KeySpec { begin: %s, find: %s, flags: %s }" % (begin, find, kf)


def row(info, docs):
    name, arity, flags, first, last, step, acl, tips, specs, subs = info[:10]
    if name.lower() in HIDDEN_MAY_REPLICATE:
        flags = list(flags) + ["may_replicate"]
    d = pairs(docs.get(name, {})) if docs else {}
    return (
        "    CommandSpec { name: %s, arity: %d, flags: %s, first_key: %d, last_key: %d, step: %d, "
        "group: %s, since: %s, summary: %s, key_specs: &[%s], acl: &[%s] },"
        % (
            rust_str(name.lower()), arity, flags_expr(flags, FLAG_BITS, "F_"), first, last, step,
            rust_str(d.get("group", "")), rust_str(d.get("since", "")), rust_str(d.get("summary", "")),
            ", ".join(key_spec(s) for s in specs),
            ", ".join(rust_str(c.lstrip("@")) for c in acl),
        )
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "crates", "resp", "src", "command_table.rs"))
    a = ap.parse_args()
    proc = None
    port = a.port
    if port is None:
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        d = tempfile.mkdtemp()
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", d],
                                stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                sock = socket.create_connection(("127.0.0.1", port)); break
            except OSError:
                time.sleep(0.05)
        f = sock.makefile("rb")
        version = pairs_info(command(sock, f, "INFO", "server"))["redis_version"]
        infos = command(sock, f, "COMMAND", "INFO")
        docs = pairs(command(sock, f, "COMMAND", "DOCS"))
        top, subs = [], []
        for info in sorted(infos, key=lambda i: i[0]):
            top.append(row(info, docs))
            sd = pairs(pairs(docs.get(info[0], {})).get("subcommands", {}) or {})
            for sub in sorted(info[9] or [], key=lambda i: i[0]):
                subs.append(row(sub, sd))
        with open(a.out, "w") as out:
            out.write("// @generated by scripts/gen-command-table.py from redis-server %s.\n" % version)
            out.write("// Do not edit by hand: rerun the script.\n")
            out.write("#![allow(clippy::all)]\nuse crate::command::*;\n\n")
            out.write("/// Redis version the table was read from.\npub const REDIS_VERSION: &str = %s;\n\n" % rust_str(version))
            out.write("/// Top-level commands, sorted by name.\npub static COMMANDS: &[CommandSpec] = &[\n%s\n];\n\n" % "\n".join(top))
            out.write("/// Subcommands (`container|sub`), sorted by name.\npub static SUBCOMMANDS: &[CommandSpec] = &[\n%s\n];\n" % "\n".join(subs))
        print("wrote %d commands and %d subcommands from redis %s to %s" % (len(top), len(subs), version, a.out))
    finally:
        if proc:
            proc.terminate(); proc.wait()


def pairs_info(text):
    return dict(l.split(":", 1) for l in text.splitlines() if ":" in l and not l.startswith("#"))


if __name__ == "__main__":
    sys.exit(main())
