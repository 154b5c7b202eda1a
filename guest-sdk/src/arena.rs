//! The guest's global allocator: a bump arena in the component's initial
//! memory, in front of the system allocator (wasi-libc's `malloc`).
//!
//! Capstan's host runs every call on a fresh instance and drops it after
//! (see the runtime's `Plugin::reconcile`), so memory a reconcile frees is
//! never needed again: the instance's whole linear memory is reset when the
//! call ends. A general-purpose allocator spends its time on bookkeeping this
//! lifecycle never uses (wasi-libc's dlmalloc took ~20% of the guest's time in
//! the runtime benchmark, and serde allocates a string per key and value). So
//! allocations are served by moving a pointer through a fixed arena, and a
//! free returns memory only when it is the newest block (which covers the
//! scratch buffers and `Vec` growth serde does); a block that grows while it
//! is the newest grows in place.
//!
//! The arena is a zero-initialised static, so it lies in the component's
//! initial memory (`.bss`): using it never grows linear memory, and the host
//! resets only the pages a call dirtied. When it is exhausted (a reconcile
//! that allocates more than [`ARENA_BYTES`]), allocations fall through to the
//! system allocator, which frees and reuses as usual; memory stays bounded by
//! the plugin's memory limit either way.
//!
//! It is written here rather than taken from a crate because what matters is
//! the pairing with the host's instance-per-call lifecycle and the fallback to
//! `System` for everything outside the arena, not the allocator itself (about
//! fifty lines). A plugin that prefers another allocator builds `capstan-sdk`
//! with `default-features = false` (no `arena` feature) and declares its own.
//! The allocator is installed only on `wasm32` without threads; native builds
//! (tests) keep the platform's allocator.

use std::alloc::Layout;
use std::cell::Cell;

/// Bytes of the arena: enough for a reconcile of a few hundred kilobytes of
/// snapshot without touching the system allocator; pages the reconcile does
/// not reach are never touched, so they cost neither memory nor reset time.
pub const ARENA_BYTES: usize = 1 << 20;

/// A bump allocator over one contiguous region `[base, base + len)`.
///
/// Addresses are plain `usize` so the bookkeeping is testable natively over
/// any range; only the global allocator (on `wasm32`) turns them into pointers.
#[derive(Debug)]
pub struct Arena {
    /// Start address; 0 until bound (see [`Self::bind`]).
    base: Cell<usize>,
    len: usize,
    /// Offset of the first free byte.
    next: Cell<usize>,
}

impl Arena {
    /// An arena over `len` bytes starting at address `base`.
    pub const fn new(base: usize, len: usize) -> Self {
        Self {
            base: Cell::new(base),
            len,
            next: Cell::new(0),
        }
    }

    /// Places an arena made with base 0 at `base`, once, before its first
    /// block (a static's address is not a constant a `static` initialiser
    /// may turn into a `usize`).
    pub fn bind(&self, base: usize) {
        if self.base.get() == 0 {
            self.base.set(base);
        }
    }

    /// Whether `addr` lies inside the arena.
    pub fn contains(&self, addr: usize) -> bool {
        let base = self.base.get();
        base != 0 && addr >= base && addr - base < self.len
    }

    /// Bytes handed out and not returned (the high-water mark of the bump).
    pub fn used(&self) -> usize {
        self.next.get()
    }

    /// The address of a new block for `layout`, or `None` when the arena
    /// cannot hold it.
    pub fn alloc(&self, layout: Layout) -> Option<usize> {
        let base = self.base.get();
        if base == 0 {
            return None;
        }
        let start = (base + self.next.get()).checked_next_multiple_of(layout.align())?;
        let end = start.checked_add(layout.size())?;
        if end > base + self.len {
            return None;
        }
        self.next.set(end - base);
        Some(start)
    }

    /// Returns the block at `addr` to the arena if it is the newest one;
    /// older blocks stay until the instance is dropped.
    pub fn free(&self, addr: usize, layout: Layout) {
        let base = self.base.get();
        if addr + layout.size() == base + self.next.get() {
            self.next.set(addr - base);
        }
    }

    /// Resizes the block at `addr` to `new_size` without moving it: always
    /// possible when shrinking, and when growing the newest block while the
    /// arena has room. `false`: the caller must move it.
    pub fn resize_in_place(&self, addr: usize, layout: Layout, new_size: usize) -> bool {
        let base = self.base.get();
        let newest = addr + layout.size() == base + self.next.get();
        if newest {
            if addr.saturating_add(new_size) > base + self.len {
                return false;
            }
            self.next.set(addr + new_size - base);
            return true;
        }
        new_size <= layout.size()
    }
}

/// Bytes of the global arena in use now (the bump's high-water mark), or
/// `None` where the arena is not the global allocator (native builds, or
/// `capstan-sdk` without its `arena` feature). A plugin may log it to size
/// its working memory.
pub fn used() -> Option<usize> {
    #[cfg(all(
        feature = "arena",
        target_arch = "wasm32",
        not(target_feature = "atomics")
    ))]
    return Some(global::used());
    #[cfg(not(all(
        feature = "arena",
        target_arch = "wasm32",
        not(target_feature = "atomics")
    )))]
    return None;
}

/// The `#[global_allocator]` of a Rust plugin built for `wasm32`.
#[cfg(all(
    feature = "arena",
    target_arch = "wasm32",
    not(target_feature = "atomics")
))]
// A global allocator is an `unsafe` trait: its contract is that blocks are
// valid, aligned and not handed out twice, which `Arena` keeps by only ever
// moving `next` past a block it returns (or back over the newest one freed).
#[allow(unsafe_code)]
mod global {
    use super::{ARENA_BYTES, Arena};
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::UnsafeCell;

    #[repr(C, align(16))]
    struct Region(UnsafeCell<[u8; ARENA_BYTES]>);

    static REGION: Region = Region(UnsafeCell::new([0; ARENA_BYTES]));

    struct ArenaThenSystem {
        arena: Arena,
    }

    // wasm32 without the `atomics` feature has one thread: nothing is shared.
    unsafe impl Sync for Region {}
    unsafe impl Sync for ArenaThenSystem {}

    #[global_allocator]
    static ALLOCATOR: ArenaThenSystem = ArenaThenSystem {
        arena: Arena::new(0, ARENA_BYTES),
    };

    pub(super) fn used() -> usize {
        ALLOCATOR.arena().used()
    }

    impl ArenaThenSystem {
        /// The arena, bound to the static region on first use.
        fn arena(&self) -> &Arena {
            self.arena.bind(REGION.0.get() as usize);
            &self.arena
        }
    }

    unsafe impl GlobalAlloc for ArenaThenSystem {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            match self.arena().alloc(layout) {
                Some(addr) => addr as *mut u8,
                None => unsafe { System.alloc(layout) },
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let arena = self.arena();
            if arena.contains(ptr as usize) {
                arena.free(ptr as usize, layout);
            } else {
                unsafe { System.dealloc(ptr, layout) }
            }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let arena = self.arena();
            if !arena.contains(ptr as usize) {
                return unsafe { System.realloc(ptr, layout, new_size) };
            }
            if arena.resize_in_place(ptr as usize, layout, new_size) {
                return ptr;
            }
            // SAFETY: `GlobalAlloc::realloc`'s contract: `new_size`, rounded
            // up to `layout.align()`, does not overflow `isize`.
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            let new = unsafe { self.alloc(new_layout) };
            if !new.is_null() {
                unsafe {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Arena;
    use std::alloc::Layout;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).expect("layout")
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_inside() {
        let arena = Arena::new(1000, 100);
        let a = arena.alloc(layout(3, 1)).expect("a");
        let b = arena.alloc(layout(8, 8)).expect("b");
        let c = arena.alloc(layout(5, 16)).expect("c");
        assert_eq!(a, 1000);
        assert_eq!(b, 1008, "aligned up past a");
        assert_eq!(c, 1024, "aligned up past b");
        assert!([a, b, c, c + 4].into_iter().all(|x| arena.contains(x)));
        assert!(!arena.contains(999) && !arena.contains(1100));
        assert_eq!(arena.used(), 29);
    }

    #[test]
    fn exhaustion_falls_through_without_moving_the_bump() {
        let arena = Arena::new(64, 64);
        assert!(arena.alloc(layout(60, 1)).is_some());
        assert_eq!(arena.alloc(layout(8, 1)), None);
        assert_eq!(
            arena.alloc(layout(4, 8)),
            None,
            "aligned start is past the end"
        );
        assert_eq!(arena.used(), 60);
        assert!(arena.alloc(layout(4, 1)).is_some(), "what fits still fits");
        assert_eq!(arena.alloc(layout(isize::MAX as usize, 1)), None, "too big");
    }

    #[test]
    fn only_the_newest_block_is_returned() {
        let arena = Arena::new(64, 64);
        let a = arena.alloc(layout(16, 1)).expect("a");
        let b = arena.alloc(layout(16, 1)).expect("b");
        arena.free(a, layout(16, 1));
        assert_eq!(arena.used(), 32, "an older block stays");
        arena.free(b, layout(16, 1));
        assert_eq!(arena.used(), 16, "the newest goes back");
        assert_eq!(arena.alloc(layout(8, 1)), Some(b), "and is reused");
    }

    #[test]
    fn the_newest_block_grows_in_place_others_only_shrink() {
        let arena = Arena::new(64, 64);
        let a = arena.alloc(layout(8, 1)).expect("a");
        assert!(arena.resize_in_place(a, layout(8, 1), 32));
        assert_eq!(arena.used(), 32);
        assert!(
            arena.resize_in_place(a, layout(32, 1), 4),
            "shrinks the bump"
        );
        assert_eq!(arena.used(), 4);
        assert!(!arena.resize_in_place(a, layout(4, 1), 65), "past the end");
        let b = arena.alloc(layout(8, 1)).expect("b");
        assert!(
            !arena.resize_in_place(a, layout(4, 1), 8),
            "a is no longer newest"
        );
        assert!(arena.resize_in_place(a, layout(4, 1), 2), "but may shrink");
        assert_eq!(arena.used(), 12, "shrinking an old block keeps the bump");
        assert!(arena.contains(b));
    }

    #[test]
    fn an_unbound_arena_serves_nothing_until_bound() {
        let arena = Arena::new(0, 64);
        assert_eq!(arena.alloc(layout(1, 1)), None);
        assert!(!arena.contains(0));
        arena.bind(4096);
        arena.bind(8192);
        assert_eq!(arena.alloc(layout(1, 1)), Some(4096), "bound once");
    }
}
