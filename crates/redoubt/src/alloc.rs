//! The global allocator: mimalloc, asked for plain blocks whenever a
//! plain block is aligned enough.
//!
//! The store allocates and frees a few small blocks per write (key, value,
//! journal entry): glibc's allocator spent a tenth of a standalone SET in
//! its free lists and consolidation. mimalloc's arenas also sit on
//! transparent huge pages, so random key lookups miss the TLB less (built
//! with `no_thp`, most of the gain went). Redis ships jemalloc for the same
//! reasons. The cost: about 7 MiB more resident memory when idle.
//!
//! The `mimalloc` crate's allocator asks for every block by size and
//! alignment (`mi_malloc_aligned`), and mimalloc serves that from its
//! plain free lists only when the block's size class is a power of two:
//! a 48-byte or 16 KiB request went down its generic aligned path
//! (over-allocating), about 45 instructions per allocation on average and
//! several hundred for a read buffer, where `mi_malloc` takes 15 to 20.
//! mimalloc's size classes are multiples of 8 bytes, and of 16 from 16
//! bytes up, laid out from 16-aligned page starts: a plain block of at
//! least `align` bytes is aligned to `align` up to 16, the same rule the
//! standard library applies to the system's `malloc`. Larger alignments
//! still go through the aligned calls.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc,
    mi_zalloc_aligned,
};

/// The alignment every plain mimalloc block of at least that many bytes
/// has (`MI_MAX_ALIGN_SIZE`).
const PLAIN_ALIGN: usize = 16;

/// mimalloc, through its plain calls where they suffice.
pub struct Allocator;

fn plain(align: usize, size: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

// SAFETY (all four): the pointers handed in were returned by this
// allocator for the same layout (GlobalAlloc's contract); mimalloc's
// `mi_free` and `mi_realloc` take blocks from either its plain or aligned
// calls; a plain block is aligned as `layout` asks whenever `plain` holds
// (module docs).
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            unsafe { mi_malloc(layout.size()) as *mut u8 }
        } else {
            unsafe { mi_malloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            unsafe { mi_zalloc(layout.size()) as *mut u8 }
        } else {
            unsafe { mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        unsafe { mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(layout.align(), new_size) {
            unsafe { mi_realloc(ptr as *mut c_void, new_size) as *mut u8 }
        } else {
            unsafe { mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8 }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size up to 4 KiB and past it, at every alignment up to 4 KiB:
    /// the block is aligned as asked, holds what is written to it, and
    /// keeps it (and its alignment) when grown and shrunk.
    #[test]
    fn blocks_are_aligned_as_asked_and_keep_their_bytes_through_realloc() {
        let a = Allocator;
        let sizes = (1..=256).chain([320, 1000, 1024, 4096, 16 * 1024, 16 * 1024 + 8, 1 << 20]);
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
                let layout = Layout::from_size_align(size, align).expect("layout");
                // SAFETY: a non-zero size; every block is freed below with
                // its layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    std::ptr::write_bytes(p, 0xab, size);
                    let grown = a.realloc(p, layout, size * 3);
                    assert_eq!(
                        grown as usize % align,
                        0,
                        "grown: size {size} align {align}"
                    );
                    assert!((0..size).all(|i| *grown.add(i) == 0xab));
                    let big = Layout::from_size_align(size * 3, align).expect("layout");
                    let shrunk = a.realloc(grown, big, (size / 2).max(1));
                    assert_eq!(
                        shrunk as usize % align,
                        0,
                        "shrunk: size {size} align {align}"
                    );
                    assert!((0..(size / 2).max(1)).all(|i| *shrunk.add(i) == 0xab));
                    let small = Layout::from_size_align((size / 2).max(1), align).expect("layout");
                    a.dealloc(shrunk, small);

                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed: size {size} align {align}");
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }

    /// Many blocks of the sizes a session makes, held at once: pages fill
    /// and new ones start, and each block is still aligned.
    #[test]
    fn full_pages_hand_out_aligned_blocks_too() {
        let a = Allocator;
        for (size, align) in [(24, 8), (40, 8), (48, 16), (80, 16), (8, 8), (16, 16)] {
            let layout = Layout::from_size_align(size, align).expect("layout");
            // SAFETY: as above.
            unsafe {
                let blocks: Vec<*mut u8> = (0..10_000).map(|_| a.alloc(layout)).collect();
                for &p in &blocks {
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                }
                for p in blocks {
                    a.dealloc(p, layout);
                }
            }
        }
    }
}
