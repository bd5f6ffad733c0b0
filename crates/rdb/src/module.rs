//! Module data (RDB type 7 values and the MODULE_AUX opcode): a 64-bit
//! module ID (9-character type name in 6-bit symbols + 10-bit encoding
//! version), then self-describing opcodes (integer, float, double,
//! string) up to an EOF opcode, which is what lets us skip them.

use std::io::Read;

use crate::source::Source;
use crate::Error;

const CHARSET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The 9-character module type name packed in a module ID.
pub fn type_name(module_id: u64) -> String {
    let mut id = module_id >> 10;
    let mut name = [0u8; 9];
    for slot in name.iter_mut().rev() {
        *slot = CHARSET[(id & 63) as usize];
        id >>= 6;
    }
    String::from_utf8_lossy(&name).into_owned()
}

/// Reads past a module value's opcodes, through its EOF opcode.
pub(crate) fn skip_value<R: Read>(src: &mut Source<R>, name: &str) -> Result<(), Error> {
    let what = format!("module {name} data");
    loop {
        let at = src.pos();
        match src.len(&what)? {
            0 => return Ok(()),
            1 | 2 => {
                src.len(&what)?;
            }
            3 => src.skip(4, &what)?,
            4 => src.skip(8, &what)?,
            5 => src.skip_string(&what)?,
            op => {
                return Err(Error::corrupt(
                    at,
                    format!("{what}: unknown module opcode {op}"),
                ))
            }
        }
    }
}
