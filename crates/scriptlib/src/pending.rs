//! `Pending`: the containers a decoder is filling (or an encoder walking),
//! kept mostly in a Lua table rather than as Rust handles.
//!
//! mlua keeps every live handle (`Table`, `LuaString`, ...) on an auxiliary
//! Lua stack that holds about 8000 values in all, and panics past that. A
//! handle per nesting level would reach it on inputs Redis handles fine.
//! `Pending` is a stack whose top [`HOT`] entries stay in Rust (cheap to
//! reach, as almost every value is shallow) and whose older entries spill
//! into a Lua table, so a walk of any depth holds O(1) handles.

use mlua::{Lua, Table, Value};

/// Entries kept as Rust handles; the rest wait in the Lua table.
const HOT: usize = 64;

pub(crate) struct Pending {
    lua: Lua,
    hot: Vec<Value>,
    /// Older entries, `1..=spilled`, created on first spill.
    cold: Option<Table>,
    spilled: i64,
}

impl Pending {
    pub(crate) fn new(lua: &Lua) -> Self {
        Pending {
            lua: lua.clone(),
            hot: Vec::new(),
            cold: None,
            spilled: 0,
        }
    }

    pub(crate) fn push(&mut self, v: Value) -> mlua::Result<()> {
        if self.hot.len() == HOT {
            let cold = match &self.cold {
                Some(t) => t.clone(),
                None => {
                    let t = self.lua.create_table()?;
                    self.cold = Some(t.clone());
                    t
                }
            };
            for old in self.hot.drain(..HOT / 2) {
                self.spilled += 1;
                cold.raw_set(self.spilled, old)?;
            }
        }
        self.hot.push(v);
        Ok(())
    }

    /// Makes sure the top `n` entries (as many as exist) are hot.
    fn warm(&mut self, n: usize) -> mlua::Result<()> {
        if self.hot.len() >= n || self.spilled == 0 {
            return Ok(());
        }
        let Some(cold) = &self.cold else {
            return Ok(());
        };
        let take = (HOT / 2).max(n).min(self.spilled as usize);
        let mut back = Vec::with_capacity(take);
        for _ in 0..take {
            back.push(cold.raw_get::<Value>(self.spilled)?);
            cold.raw_set(self.spilled, Value::Nil)?;
            self.spilled -= 1;
        }
        back.reverse();
        back.append(&mut self.hot);
        self.hot = back;
        Ok(())
    }

    pub(crate) fn pop(&mut self) -> mlua::Result<Value> {
        self.warm(1)?;
        Ok(self.hot.pop().unwrap_or(Value::Nil))
    }

    /// The value `below` places under the top (0 is the top).
    pub(crate) fn peek(&mut self, below: usize) -> mlua::Result<&Value> {
        self.warm(below + 1)?;
        let i = self.hot.len().checked_sub(below + 1);
        Ok(i.and_then(|i| self.hot.get(i)).unwrap_or(&Value::Nil))
    }

    /// Replaces the top value.
    pub(crate) fn replace_top(&mut self, v: Value) -> mlua::Result<()> {
        self.warm(1)?;
        if let Some(top) = self.hot.last_mut() {
            *top = v;
        }
        Ok(())
    }

    /// The table `below` places under the top.
    pub(crate) fn table(&mut self, below: usize) -> mlua::Result<&Table> {
        match self.peek(below)? {
            Value::Table(t) => Ok(t),
            _ => Err(mlua::Error::runtime(
                "scriptlib: pending entry is not a table",
            )),
        }
    }
}
