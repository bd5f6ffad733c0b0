//! A hasher for maps whose keys are already hashes (`u64`s made by
//! hashing what they stand for): the key is used as it is.

use std::hash::Hasher;

/// See the module: `HashMap<u64, V, BuildHasherDefault<Prehashed>>`.
#[derive(Default)]
pub(crate) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64`s are hashed here; fold anything else in regardless.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}
