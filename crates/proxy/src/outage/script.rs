//! Scripts while Redis is not Up: a script whose keys, declared and
//! touched, are all durable runs on the local store, on Redis's exact
//! state as the replica holds it; its writes are journaled by their
//! effects as one record, so replay applies them once, as one transaction,
//! and never runs the script again. A script that touches anything else,
//! or a key whose value is not known here, is refused whole: the local
//! store undoes whatever it had done, and nothing is journaled.
//!
//! Every key a script touches is judged when the script first reaches it
//! (a [`store::KeyHook`]): keys the outage wrote are already whole here;
//! the rest are seeded from the replica's copy then. Every command the
//! script runs passes the session's permission check first, as Redis
//! checks each `redis.call` against the user's ACL.

use std::sync::Arc;

use bytes::Bytes;
use store::{KeyAccess, KeyHook};

use super::{Outage, Route};
use crate::gate::Refusal;
use crate::policy::Policy;
use crate::replica::Knowledge;

/// Redis's reply to `EVALSHA` of a script it does not have.
const NOSCRIPT: &str = "NOSCRIPT No matching script. Please use EVAL.";

/// The script commands run here during an outage.
pub(super) fn is_script(name: &str) -> bool {
    matches!(name, "eval" | "evalsha" | "eval_ro" | "evalsha_ro")
}

/// A refusal as Redis words it for a command inside a script.
fn in_script(refusal: &Refusal) -> String {
    const WHO: &str = "ERR The user executing the script";
    match refusal {
        Refusal::NoPermKey { .. } => format!(
            "{WHO} can't access at least one of the keys mentioned in the command arguments"
        ),
        Refusal::NoPermCommand { .. } => format!("{WHO} can't run this command or subcommand"),
        other => {
            let reply = other.reply();
            String::from_utf8_lossy(&reply[1..reply.len().saturating_sub(2)]).into_owned()
        }
    }
}

impl Outage {
    /// Runs the script `args` (`EVAL`, `EVALSHA` or their `_RO` forms)
    /// locally, or refuses it whole. Called with the declared keys
    /// already found durable and permitted; `era` as for
    /// [`Outage::forgotten`].
    pub(super) async fn script_route(
        &self,
        session: &mut store::Session,
        db: u32,
        args: &[Bytes],
        name: &str,
        caller: crate::access::OwnedCaller,
        era: u64,
    ) -> Route {
        let Some(replica) = self.complete_copy(&Self::keys(args)) else {
            return self.refuse(&format!(
                "'{name}' runs here only on the replica's exact copy of the durable keyspaces, which is not complete"
            ));
        };
        let read_only = name.ends_with("_ro");
        if !read_only {
            if let Some(refused) = self.durable_write_refused() {
                return refused;
            }
        }
        if name.starts_with("evalsha") {
            match self.scripts.body(&args[1]) {
                // The local store runs it by its SHA, like Redis.
                Some(body) => {
                    let _ = self.store.apply(
                        0,
                        &[
                            Bytes::from_static(b"SCRIPT"),
                            Bytes::from_static(b"LOAD"),
                            body,
                        ],
                    );
                }
                None => return Route::Local(crate::reply::error(NOSCRIPT), None),
            }
        } else {
            self.scripts.remember(args[1].clone());
        }
        let _order = self.order.lock().await;
        if self.forgotten(era) {
            return Route::Upstream;
        }
        self.select(session, db).await;
        // In a cluster, the copy is its slot's primary's: a key of another
        // slot would read as absent there, and its write could not be
        // replayed with the rest.
        let slot = self.cluster.get().and_then(|_| {
            Self::keys(args)
                .first()
                .map(|k| upstream::cluster::key_slot(k))
        });
        session.set_key_hook(Some(self.key_hook(db, replica, slot)));
        // Each command the script runs is checked against the client's
        // permissions, as Redis checks each `redis.call`.
        session.set_command_hook(Some(std::sync::Arc::new(
            move |_db: usize, argv: &[Bytes]| caller.check(argv).map(|r| in_script(&r)),
        )));
        self.counters
            .served_locally
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = self.store.execute(session, args.to_vec()).await;
        session.set_key_hook(None);
        session.set_command_hook(None);
        if out.effects.is_empty() {
            // A read, an error before any write, or refused whole (undone).
            return Route::Local(out.reply.to_bytes(), None);
        }
        let durable = self.journal_effects(db, &out.effects);
        Route::Local(out.reply.to_bytes(), Some(durable))
    }

    /// The judge of each key a script touches (see the module docs).
    fn key_hook(
        &self,
        db: u32,
        replica: Arc<crate::replica::Replica>,
        slot: Option<u16>,
    ) -> KeyHook {
        let keyspaces = self.keyspaces.clone();
        let marks = self.keys.clone();
        let refuse = |why: String| {
            KeyAccess::Deny(format!(
                "UNAVAILABLE redis is down and {why}: script not executed, nothing applied"
            ))
        };
        let hook = move |hdb: usize, key: &[u8]| -> KeyAccess {
            if hdb != db as usize {
                return refuse("the script selected another database".into());
            }
            let shown = || {
                String::from_utf8_lossy(key)
                    .chars()
                    .take(128)
                    .collect::<String>()
            };
            if keyspaces.policy(key) != Policy::Durable {
                return refuse(format!(
                    "the script touched '{}', outside the durable keyspaces",
                    shown()
                ));
            }
            if slot.is_some_and(|s| s != upstream::cluster::key_slot(key)) {
                return refuse(format!(
                    "the script touched '{}', in another cluster slot than its keys",
                    shown()
                ));
            }
            if marks.written(db, key) {
                return KeyAccess::Local;
            }
            match replica.lookup(db, key) {
                Knowledge::Value(v, at) => KeyAccess::Seed(Some((v, at))),
                Knowledge::Absent => KeyAccess::Seed(None),
                Knowledge::Unknown => {
                    refuse(format!("the value of '{}' is unknown locally", shown()))
                }
            }
        };
        Arc::new(hook)
    }
}
