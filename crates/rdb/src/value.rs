//! One value of any RDB type (`rdbLoadObject`): the collection types in
//! each of their encodings, streams and module values.

use std::io::Read;

use bytes::Bytes;

use crate::listpack::Item;
use crate::source::{Blob, Source};
use crate::{intset, listpack, module, stream, ziplist, zipmap, Error, Value};

/// Whether `ty` is a value type byte this decoder knows.
pub(crate) fn is_value_type(ty: u8) -> bool {
    matches!(ty, 0..=7 | 9..=21)
}

fn limit<R: Read>(src: &Source<R>, at: u64, n: usize) -> Result<(), Error> {
    let max = src.limits.max_elements;
    if n as u64 > max {
        return Err(Error::Limit {
            at,
            what: format!("value has more than max_elements ({max}) elements"),
        });
    }
    Ok(())
}

fn pairs(items: Vec<Item>, blob: &Blob, kind: &str) -> Result<Vec<(Item, Item)>, Error> {
    if items.len() & 1 == 1 {
        return Err(Error::corrupt(
            blob.start,
            format!("{kind} holds an odd number ({}) of elements", items.len()),
        ));
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        out.push((a, b));
    }
    Ok(out)
}

fn scored(pairs: Vec<(Item, Item)>, blob: &Blob, kind: &str) -> Result<Vec<(Bytes, f64)>, Error> {
    pairs
        .into_iter()
        .map(|(m, s)| match s.as_f64() {
            Some(score) => Ok((m.into_bytes(), score)),
            None => Err(Error::corrupt(
                blob.start,
                format!("{kind} holds a score that is not a number"),
            )),
        })
        .collect()
}

fn listpack_items<R: Read>(src: &mut Source<R>, what: &str) -> Result<(Vec<Item>, Blob), Error> {
    let blob = src.blob(what)?;
    let items =
        listpack::decode(&blob.data, src.limits.max_elements).map_err(|e| blob.error(what, e))?;
    Ok((items, blob))
}

fn ziplist_items<R: Read>(src: &mut Source<R>, what: &str) -> Result<(Vec<Item>, Blob), Error> {
    let blob = src.blob(what)?;
    let items =
        ziplist::decode(&blob.data, src.limits.max_elements).map_err(|e| blob.error(what, e))?;
    Ok((items, blob))
}

fn bytes_of(items: Vec<Item>) -> Vec<Bytes> {
    items.into_iter().map(Item::into_bytes).collect()
}

fn byte_pairs(p: Vec<(Item, Item)>) -> Vec<(Bytes, Bytes)> {
    p.into_iter()
        .map(|(a, b)| (a.into_bytes(), b.into_bytes()))
        .collect()
}

/// Reads the value of type `ty` (the type byte already read at `at`).
pub(crate) fn read<R: Read>(src: &mut Source<R>, ty: u8, at: u64) -> Result<Value, Error> {
    Ok(match ty {
        0 => Value::String(src.string("string value")?),
        1 | 2 => {
            let n = src.count("element count")?;
            let mut v = Vec::with_capacity(n.min(1024) as usize);
            for _ in 0..n {
                v.push(src.string("element")?);
            }
            if ty == 1 {
                Value::List(v)
            } else {
                Value::Set(v)
            }
        }
        3 | 5 => {
            let n = src.count("sorted set size")?;
            let mut v = Vec::with_capacity(n.min(1024) as usize);
            for _ in 0..n {
                let m = src.string("sorted set member")?;
                let s = if ty == 3 {
                    src.text_double("sorted set score")?
                } else {
                    src.binary_double("sorted set score")?
                };
                v.push((m, s));
            }
            Value::ZSet(v)
        }
        4 => {
            let n = src.count("hash size")?;
            let mut v = Vec::with_capacity(n.min(1024) as usize);
            for _ in 0..n {
                let f = src.string("hash field")?;
                let x = src.string("hash value")?;
                v.push((f, x));
            }
            Value::Hash(v)
        }
        6 => {
            let id = src.len("module ID")?;
            return Err(Error::Unsupported {
                at,
                what: format!(
                    "a value of module type '{}' in the pre-release module format (RDB type 6), which cannot be skipped",
                    module::type_name(id)
                ),
            });
        }
        7 => {
            let id = src.len("module ID")?;
            let type_name = module::type_name(id);
            module::skip_value(src, &type_name)?;
            Value::Module { type_name }
        }
        9 => {
            let blob = src.blob("zipmap")?;
            let p = zipmap::decode(&blob.data, src.limits.max_elements)
                .map_err(|e| blob.error("zipmap", e))?;
            Value::Hash(p)
        }
        10 => Value::List(bytes_of(ziplist_items(src, "list ziplist")?.0)),
        11 => {
            let blob = src.blob("intset")?;
            let v = intset::decode(&blob.data, src.limits.max_elements)
                .map_err(|e| blob.error("intset", e))?;
            Value::Set(v)
        }
        12 => {
            let (items, blob) = ziplist_items(src, "sorted set ziplist")?;
            Value::ZSet(scored(
                pairs(items, &blob, "sorted set ziplist")?,
                &blob,
                "sorted set ziplist",
            )?)
        }
        13 => {
            let (items, blob) = ziplist_items(src, "hash ziplist")?;
            Value::Hash(byte_pairs(pairs(items, &blob, "hash ziplist")?))
        }
        14 | 18 => {
            let nodes = src.count("quicklist node count")?;
            let mut v = Vec::new();
            for _ in 0..nodes {
                let container = if ty == 18 {
                    let cat = src.pos();
                    match src.len("quicklist node container")? {
                        c @ (1 | 2) => c,
                        c => {
                            return Err(Error::corrupt(
                                cat,
                                format!(
                                "quicklist node container {c} is neither 1 (plain) nor 2 (packed)"
                            ),
                            ))
                        }
                    }
                } else {
                    2
                };
                let (items, blob) = if container == 1 {
                    let blob = src.blob("quicklist plain node")?;
                    (vec![Item::Str(blob.data.clone())], blob)
                } else if ty == 18 {
                    listpack_items(src, "quicklist listpack node")?
                } else {
                    ziplist_items(src, "quicklist ziplist node")?
                };
                if blob.data.is_empty() {
                    return Err(Error::corrupt(blob.start, "empty quicklist node"));
                }
                v.extend(bytes_of(items));
                limit(src, blob.start, v.len())?;
            }
            Value::List(v)
        }
        15 | 19 | 21 => Value::Stream(Box::new(stream::read(src, ty)?)),
        16 => {
            let (items, blob) = listpack_items(src, "hash listpack")?;
            Value::Hash(byte_pairs(pairs(items, &blob, "hash listpack")?))
        }
        17 => {
            let (items, blob) = listpack_items(src, "sorted set listpack")?;
            Value::ZSet(scored(
                pairs(items, &blob, "sorted set listpack")?,
                &blob,
                "sorted set listpack",
            )?)
        }
        20 => Value::Set(bytes_of(listpack_items(src, "set listpack")?.0)),
        _ => {
            return Err(Error::corrupt(at, format!("unknown value type {ty}")));
        }
    })
}
