//! Read buffers lent between the connections served on one thread.
//!
//! A connection holds no read buffer while it waits for a client (10,000
//! idle clients would otherwise hold 16 KiB each), so a client that sends
//! one command at a time used to cost an allocation of a fresh buffer,
//! and its release, for every command: a large allocation is the
//! allocator's slow path, about a twentieth of the proxy's work per
//! unpipelined command. An emptied buffer is given back here instead, and
//! the next read on the same thread takes it, as Redis lends one query
//! buffer to whichever client it reads.

use std::cell::RefCell;

use bytes::BytesMut;

/// Buffers kept per thread: enough for every client a benchmark or a busy
/// service keeps sending at once; past it buffers go back to the
/// allocator.
const KEPT: usize = 64;

/// A buffer with more room than this (grown by a large request) goes back
/// to the allocator.
const KEPT_ROOM: usize = 64 * 1024;

thread_local! {
    static IDLE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// Takes an emptied `buf`, leaving it holding nothing: kept to lend to
/// the next read on this thread, or given back to the allocator (a big
/// one, or past [`KEPT`]). A buffer with bytes in it stays as it is.
pub fn give_back(buf: &mut BytesMut) {
    if !buf.is_empty() || buf.capacity() == 0 {
        return;
    }
    let b = std::mem::take(buf);
    if b.capacity() > KEPT_ROOM {
        return;
    }
    IDLE.with(|idle| {
        if let Ok(mut idle) = idle.try_borrow_mut() {
            if idle.len() < KEPT {
                idle.push(b);
            }
        }
    });
}

/// A given-back buffer with room for `room` bytes, if this thread has
/// one. Its memory may still back requests in flight (taken off it as
/// slices): the room lent is then only what lies past them, which is the
/// buffer's own. One with too little of that left is let go.
pub(crate) fn lend(room: usize) -> Option<BytesMut> {
    IDLE.with(|idle| {
        let mut idle = idle.try_borrow_mut().ok()?;
        while let Some(mut b) = idle.pop() {
            if b.try_reclaim(room) && b.capacity() <= KEPT_ROOM {
                return Some(b);
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emptied_buffer_is_lent_to_the_next_read_and_a_full_one_never() {
        let mut a = BytesMut::with_capacity(16 * 1024);
        let ptr = a.as_ptr();
        a.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        give_back(&mut a);
        assert_eq!(
            a.len(),
            14,
            "a buffer with bytes in it is kept by its owner"
        );
        a.clear();
        give_back(&mut a);
        assert_eq!(a.capacity(), 0, "an empty one is taken");
        let b = lend(16 * 1024).expect("lent");
        assert_eq!(b.as_ptr(), ptr, "the same memory");
        assert!(b.is_empty());
        assert!(lend(16 * 1024).is_none(), "lent once");
    }

    #[test]
    fn a_buffer_still_backing_a_request_in_flight_is_not_lent_over_it() {
        let mut a = BytesMut::with_capacity(1024);
        a.extend_from_slice(&[b'x'; 1000]);
        let request = a.split_to(1000).freeze();
        give_back(&mut a);
        // 24 bytes of its own left: not enough, and the rest is the request's.
        assert!(lend(16 * 1024).is_none());
        assert_eq!(&request[..3], b"xxx", "the request's bytes are untouched");
        // Room past the request: that room is lent, the request's bytes
        // stay as they are.
        let mut d = BytesMut::with_capacity(4096);
        d.extend_from_slice(&[b'z'; 1000]);
        let request = d.split_to(1000).freeze();
        give_back(&mut d);
        let mut lent = lend(1024).expect("lent with the room past the request");
        lent.extend_from_slice(&[b'w'; 3096]);
        assert!(request.iter().all(|&c| c == b'z'));
        // Once the request is gone the memory is whole again.
        let mut c = BytesMut::with_capacity(1024);
        c.extend_from_slice(&[b'y'; 1000]);
        let request = c.split_to(1000).freeze();
        give_back(&mut c);
        drop(request);
        let b = lend(1024).expect("reclaimed whole once nothing else holds it");
        assert!(b.capacity() >= 1024);
    }

    #[test]
    fn a_grown_buffer_goes_back_to_the_allocator() {
        let mut a = BytesMut::with_capacity(KEPT_ROOM + 1);
        give_back(&mut a);
        assert_eq!(a.capacity(), 0, "released all the same");
        assert!(lend(1).is_none(), "not kept");
    }
}
