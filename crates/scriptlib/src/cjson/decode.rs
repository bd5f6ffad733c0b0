//! `cjson.decode`: lua-cjson's tokenizer and parser, with its messages.

use mlua::{Lua, MultiValue, Value};

use super::{null, Config, MAX_C_STACK};
use crate::args::{one, raise, Args, Fault, Outcome};
use crate::numfmt::strtod;
use crate::pending::Pending;

enum Tok {
    ObjBegin,
    ObjEnd,
    ArrBegin,
    ArrEnd,
    Str(Vec<u8>),
    Num(f64),
    Bool(bool),
    Null,
    Colon,
    Comma,
    End,
    Error(&'static str),
}

impl Tok {
    fn name(&self) -> &'static str {
        match self {
            Tok::ObjBegin => "T_OBJ_BEGIN",
            Tok::ObjEnd => "T_OBJ_END",
            Tok::ArrBegin => "T_ARR_BEGIN",
            Tok::ArrEnd => "T_ARR_END",
            Tok::Str(_) => "T_STRING",
            Tok::Num(_) => "T_NUMBER",
            Tok::Bool(_) => "T_BOOLEAN",
            Tok::Null => "T_NULL",
            Tok::Colon => "T_COLON",
            Tok::Comma => "T_COMMA",
            Tok::End => "T_END",
            Tok::Error(why) => why,
        }
    }
}

/// A token and where it starts (or, for an error, where it was found).
struct Token {
    tok: Tok,
    index: usize,
}

struct Parser<'a> {
    lua: &'a Lua,
    cfg: &'a Config,
    data: &'a [u8],
    pos: usize,
}

fn hex_digit(c: u8) -> Option<u32> {
    match c {
        b'0'..=b'9' => Some(u32::from(c - b'0')),
        _ => match c | 0x20 {
            c @ b'a'..=b'f' => Some(u32::from(c - b'a') + 10),
            _ => None,
        },
    }
}

impl Parser<'_> {
    /// The byte at `i`, with C's terminating NUL past the end.
    fn at(&self, i: usize) -> u8 {
        self.data.get(i).copied().unwrap_or(0)
    }

    fn hex4(&self, i: usize) -> Option<u32> {
        let mut v = 0;
        for k in 0..4 {
            v = (v << 4) | hex_digit(self.at(i + k))?;
        }
        Some(v)
    }

    fn error(&self, why: &'static str) -> Token {
        Token {
            tok: Tok::Error(why),
            index: self.pos,
        }
    }

    /// `json_is_invalid_number`: forms `strtod` reads but JSON forbids.
    fn is_invalid_number(&self) -> bool {
        let mut p = self.pos;
        if self.at(p) == b'+' {
            return true;
        }
        if self.at(p) == b'-' {
            p += 1;
        }
        if self.at(p) == b'0' {
            let c2 = self.at(p + 1);
            return (c2 | 0x20) == b'x' || c2.is_ascii_digit();
        } else if self.at(p) <= b'9' {
            return false;
        }
        let ci = |w: &[u8]| (0..3).all(|k| self.at(p + k).to_ascii_lowercase() == w[k]);
        ci(b"inf") || ci(b"nan")
    }

    fn number(&mut self) -> Token {
        let index = self.pos;
        let (v, used) = strtod(&self.data[self.pos.min(self.data.len())..]);
        if used == 0 {
            return self.error("invalid number");
        }
        self.pos += used;
        Token {
            tok: Tok::Num(v),
            index,
        }
    }

    fn string(&mut self) -> Token {
        let index = self.pos;
        self.pos += 1;
        let mut s = Vec::new();
        loop {
            let c = self.at(self.pos);
            if c == b'"' {
                break;
            }
            if c == 0 {
                return self.error("unexpected end of string");
            }
            if c == b'\\' {
                let decoded = match self.at(self.pos + 1) {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'/' => b'/',
                    b'b' => b'\x08',
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'f' => b'\x0c',
                    b'r' => b'\r',
                    b'u' => {
                        if self.unicode_escape(&mut s) {
                            continue;
                        }
                        return self.error("invalid unicode escape code");
                    }
                    _ => return self.error("invalid escape code"),
                };
                s.push(decoded);
                self.pos += 2;
                continue;
            }
            s.push(c);
            self.pos += 1;
        }
        self.pos += 1;
        Token {
            tok: Tok::Str(s),
            index,
        }
    }

    /// `\uXXXX` (or a surrogate pair of them) at `pos`, appended as UTF-8.
    fn unicode_escape(&mut self, s: &mut Vec<u8>) -> bool {
        let Some(mut cp) = self.hex4(self.pos + 2) else {
            return false;
        };
        let mut len = 6;
        if cp & 0xF800 == 0xD800 {
            if cp & 0x400 != 0 {
                return false;
            }
            if self.at(self.pos + 6) != b'\\' || self.at(self.pos + 7) != b'u' {
                return false;
            }
            let Some(low) = self.hex4(self.pos + 8) else {
                return false;
            };
            if low & 0xFC00 != 0xDC00 {
                return false;
            }
            cp = (((cp & 0x3FF) << 10) | (low & 0x3FF)) + 0x10000;
            len = 12;
        }
        match char::from_u32(cp) {
            Some(ch) => {
                let mut buf = [0u8; 4];
                s.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            None => return false,
        }
        self.pos += len;
        true
    }

    fn next(&mut self) -> Token {
        while matches!(self.at(self.pos), b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
        let index = self.pos;
        let single = |tok| Some(tok);
        let c = self.at(self.pos);
        let simple = match c {
            b'{' => single(Tok::ObjBegin),
            b'}' => single(Tok::ObjEnd),
            b'[' => single(Tok::ArrBegin),
            b']' => single(Tok::ArrEnd),
            b',' => single(Tok::Comma),
            b':' => single(Tok::Colon),
            _ => None,
        };
        if let Some(tok) = simple {
            self.pos += 1;
            return Token { tok, index };
        }
        match c {
            0 => Token {
                tok: Tok::End,
                index,
            },
            b'"' => self.string(),
            b'-' | b'0'..=b'9' => {
                if !self.cfg.decode_invalid_numbers && self.is_invalid_number() {
                    return self.error("invalid number");
                }
                self.number()
            }
            b'f' | b'i' | b'I' | b'n' | b'N' | b't' | b'+' => {
                let rest = &self.data[self.pos.min(self.data.len())..];
                for (word, tok) in [
                    (&b"true"[..], Tok::Bool(true)),
                    (&b"false"[..], Tok::Bool(false)),
                    (&b"null"[..], Tok::Null),
                ] {
                    if rest.starts_with(word) {
                        self.pos += word.len();
                        return Token { tok, index };
                    }
                }
                if self.cfg.decode_invalid_numbers && self.is_invalid_number() {
                    return self.number();
                }
                self.error("invalid token")
            }
            _ => self.error("invalid token"),
        }
    }

    fn expected(&self, what: &str, t: &Token) -> Fault {
        raise(format!(
            "Expected {what} but found {} at character {}",
            t.tok.name(),
            t.index + 1
        ))
    }

    /// `json_decode_descend`: one level deeper, within the depth setting
    /// and with `needed` free slots on the C function's Lua stack.
    fn descend(&mut self, open: &[Filling], needed: usize) -> Outcome<()> {
        let depth = open.len() + 1;
        // The argument, then what each open container holds while its
        // child is parsed.
        let slots = 1 + open.iter().map(Filling::slots).sum::<usize>();
        if depth > self.cfg.decode_max_depth as usize || slots + needed > MAX_C_STACK {
            return Err(raise(format!(
                "Found too many nested data structures ({depth}) at character {}",
                self.pos
            )));
        }
        Ok(())
    }

    /// Reads an object key and its colon, leaving the token after them.
    fn key(&mut self, t: Token) -> Outcome<(Value, Token)> {
        let Tok::Str(key) = &t.tok else {
            return Err(self.expected("object key string", &t));
        };
        let key = Value::String(self.lua.create_string(key)?);
        let t = self.next();
        if !matches!(t.tok, Tok::Colon) {
            return Err(self.expected("colon", &t));
        }
        Ok((key, self.next()))
    }

    /// `json_process_value` for the token `t`, iterative: the open
    /// containers (and an object's key) wait in a `Pending`.
    fn value(&mut self, mut t: Token) -> Outcome<Value> {
        let mut open: Vec<Filling> = Vec::new();
        let mut pending = Pending::new(self.lua);
        loop {
            let mut v = match t.tok {
                Tok::Str(s) => Value::String(self.lua.create_string(&s)?),
                Tok::Num(n) => Value::Number(n),
                Tok::Bool(b) => Value::Boolean(b),
                Tok::Null => null(),
                Tok::ObjBegin => {
                    self.descend(&open, 3)?;
                    let table = self.lua.create_table()?;
                    let first = self.next();
                    if matches!(first.tok, Tok::ObjEnd) {
                        Value::Table(table)
                    } else {
                        let (key, after) = self.key(first)?;
                        pending.push(Value::Table(table))?;
                        pending.push(key)?;
                        open.push(Filling::Object);
                        t = after;
                        continue;
                    }
                }
                Tok::ArrBegin => {
                    self.descend(&open, 2)?;
                    let table = self.lua.create_table()?;
                    let first = self.next();
                    if matches!(first.tok, Tok::ArrEnd) {
                        Value::Table(table)
                    } else {
                        pending.push(Value::Table(table))?;
                        open.push(Filling::Array { next: 1 });
                        t = first;
                        continue;
                    }
                }
                _ => return Err(self.expected("value", &t)),
            };
            // Store `v` in the innermost container, then read what follows
            // it: another item (parse it), or the container's end (the
            // container becomes the value stored in its parent).
            t = loop {
                let Some(frame) = open.last_mut() else {
                    return Ok(v);
                };
                let is_object = matches!(frame, Filling::Object);
                match frame {
                    Filling::Array { next } => {
                        pending.table(0)?.raw_set(*next, v)?;
                        *next += 1;
                    }
                    Filling::Object => {
                        let key = pending.pop()?;
                        pending.table(0)?.raw_set(key, v)?;
                    }
                }
                let after = self.next();
                match (&after.tok, is_object) {
                    (Tok::Comma, false) => break self.next(),
                    (Tok::Comma, true) => {
                        let item = self.next();
                        let (key, value_token) = self.key(item)?;
                        pending.push(key)?;
                        break value_token;
                    }
                    (Tok::ArrEnd, false) | (Tok::ObjEnd, true) => {}
                    (_, false) => return Err(self.expected("comma or array end", &after)),
                    (_, true) => return Err(self.expected("comma or object end", &after)),
                }
                open.pop();
                v = pending.pop()?;
            };
        }
    }
}

/// A container being parsed (its table, and an object's key, are in the
/// `Pending`).
enum Filling {
    Array { next: i64 },
    Object,
}

impl Filling {
    /// Lua stack slots C holds for this level while a child is parsed.
    fn slots(&self) -> usize {
        match self {
            Filling::Array { .. } => 1,
            Filling::Object => 2,
        }
    }
}

pub(super) fn decode(lua: &Lua, cfg: &Config, a: Args<'_>) -> Outcome<MultiValue> {
    if a.len() != 1 {
        return Err(a.arg_error(1, "expected 1 argument"));
    }
    let data = a.check_bytes(1)?;
    if data.len() >= 2 && (data[0] == 0 || data[1] == 0) {
        return Err(raise("JSON parser does not support UTF-16 or UTF-32"));
    }
    let mut p = Parser {
        lua,
        cfg,
        data: &data,
        pos: 0,
    };
    let t = p.next();
    let v = p.value(t)?;
    let t = p.next();
    if !matches!(t.tok, Tok::End) {
        return Err(p.expected("the end", &t));
    }
    Ok(one(v))
}
