//! Transactions: MULTI/EXEC/DISCARD and optimistic locking with
//! WATCH/UNWATCH. Commands are queued in the session; EXEC runs them all
//! under one hold of the lock, so no other client sees a partial state, and
//! their effects are journaled as one atomic group.

use resp::Frame;

use crate::ctx::{err, Ctx, Handler, Reply};
use crate::session::Session;
use crate::store::{resolve, run, Inner, Resolved, Shared};
use crate::Executed;

pub(crate) const COMMANDS: &[(&str, Handler)] = &[
    ("multi", multi),
    ("exec", exec_outside),
    ("discard", discard),
    ("watch", watch),
    ("unwatch", unwatch),
];

fn multi(ctx: &mut Ctx) -> Reply {
    if ctx.sess.multi.is_some() {
        return Err(err("ERR MULTI calls can not be nested"));
    }
    ctx.sess.multi = Some(Vec::new());
    ctx.sess.multi_error = false;
    if let Some(c) = ctx.inner.clients.get_mut(&ctx.sess.id) {
        c.in_multi = true;
    }
    Ok(Frame::simple("OK"))
}

/// Reached only through [`crate::Store::apply`], which never journals EXEC.
fn exec_outside(_ctx: &mut Ctx) -> Reply {
    Err(err("ERR EXEC without MULTI"))
}

fn end_multi(inner: &mut Inner, sess: &mut Session) {
    sess.multi = None;
    sess.multi_error = false;
    inner.unwatch(sess);
    if let Some(c) = inner.clients.get_mut(&sess.id) {
        c.in_multi = false;
    }
}

fn discard(ctx: &mut Ctx) -> Reply {
    if ctx.sess.multi.is_none() {
        return Err(err("ERR DISCARD without MULTI"));
    }
    end_multi(ctx.inner, ctx.sess);
    Ok(Frame::simple("OK"))
}

fn watch(ctx: &mut Ctx) -> Reply {
    if ctx.sess.multi.is_some() {
        return Err(err("ERR WATCH inside MULTI is not allowed"));
    }
    let id = ctx.sess.id;
    for k in &ctx.args[1..] {
        let entry = (ctx.db, k.clone());
        if ctx.sess.watched.contains(&entry) {
            continue;
        }
        let expired = ctx.inner.dbs[ctx.db].is_expired(k, ctx.now);
        ctx.inner
            .watchers
            .entry(entry.clone())
            .or_default()
            .push((id, expired));
        ctx.sess.watched.push(entry);
    }
    let n = ctx.sess.watched.len();
    if let Some(c) = ctx.inner.clients.get_mut(&id) {
        c.watching = n;
    }
    Ok(Frame::simple("OK"))
}

fn unwatch(ctx: &mut Ctx) -> Reply {
    ctx.inner.unwatch(ctx.sess);
    Ok(Frame::simple("OK"))
}

/// Runs the queued commands of `sess` (called by `execute` with the lock held).
pub(crate) fn exec(inner: &mut Inner, shared: &Shared, sess: &mut Session, now: u64) -> Executed {
    let Some(queue) = sess.multi.take() else {
        return Executed::reply(err("ERR EXEC without MULTI"));
    };
    if sess.multi_error {
        end_multi(inner, sess);
        return Executed::reply(err(
            "EXECABORT Transaction discarded because of previous errors.",
        ));
    }
    let dirty = inner.clients.get(&sess.id).is_some_and(|c| c.dirty_cas)
        || inner.watched_key_expired(sess, now);
    if dirty {
        end_multi(inner, sess);
        return Executed::reply(if sess.resp == 3 {
            Frame::Null
        } else {
            Frame::NullArray
        });
    }
    // WATCH has done its job once EXEC starts; keys the transaction itself
    // touches must not fail a later one.
    end_multi(inner, sess);
    let mut replies = Vec::with_capacity(queue.len());
    let mut effects = Vec::new();
    for args in &queue {
        match resolve(args) {
            Resolved::Reject(e, cmd) => {
                inner.stats.refused(&e, cmd);
                replies.push(e)
            }
            Resolved::Run(name, handler, _, row) => {
                let ran = run(
                    inner,
                    shared,
                    sess,
                    args,
                    (row, name),
                    handler,
                    (now, None),
                    true,
                );
                replies.push(ran.reply);
                effects.extend(ran.effects);
            }
        }
    }
    if let Some(c) = inner.clients.get_mut(&sess.id) {
        c.db = sess.db;
    }
    Executed {
        reply: Frame::Array(replies),
        more: Vec::new(),
        effects,
        atomic: true,
    }
}
