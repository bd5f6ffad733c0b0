//! Sorted set commands.

use crate::ctx::Handler;

pub(crate) const COMMANDS: &[(&str, Handler)] = &[];
