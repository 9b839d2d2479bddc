//! Bounded tables of live handles: what the C API hands out instead of heap pointers.
//!
//! A C handle (`rs_producer *`, `rs_reservation *`) is not an address. It encodes a slot
//! index, the slot's generation and a kind tag:
//!
//! ```text
//!  63            32 31              8 7      0
//! | generation     | slot index       | kind   |
//! ```
//!
//! Every entry point decodes the handle and checks, before touching anything, that the kind
//! matches, that the index is inside the table, and that the slot's generation is the one
//! in the handle (libzmq checks a tag on entry; a generation also catches a stale handle
//! whose slot was reused). A generation is odd while the slot is live and becomes even when
//! the handle is closed, committed or discarded, so a closed handle, a double close, a
//! double commit or a pointer the library never returned is refused with an error instead
//! of reaching freed memory. Nothing is ever dereferenced from the handle value itself.
//!
//! The tables are fixed arrays in static, zero-initialised memory (`.bss`: untouched slots
//! cost nothing): no allocation per handle (reservations are the zero-copy fast path),
//! memory bounded by construction, and a full table is an error (`RS_ERR_HANDLE_LIMIT`)
//! rather than growth. Free slots sit on a lock-free stack (a
//! tagged Treiber stack: the tag in the head word defeats ABA) and are reused last-in,
//! first-out, so a thread that reserves and commits in a loop keeps using the same warm slot.
//!
//! What this cannot catch: one thread closing a handle while another is still inside a
//! call with it. The C contract forbids that (close once, after every thread is done), as
//! for any handle-based C API; only sequential misuse is detected.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[cfg(not(target_pointer_width = "64"))]
compile_error!("the handle encoding needs 64-bit pointers (ringside supports x86_64 and aarch64)");

/// Which table a handle belongs to; the low byte of every handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum HandleKind {
    /// `rs_producer *`.
    Producer = 0xa5,
    /// `rs_reservation *`.
    Reservation = 0x5a,
}

impl HandleKind {
    /// The C type name, for error text.
    pub(crate) fn c_name(self) -> &'static str {
        match self {
            HandleKind::Producer => "producer",
            HandleKind::Reservation => "reservation",
        }
    }
}

/// Why a handle was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HandleError {
    /// The handle was valid once and has been closed (producer) or completed (reservation).
    Stale,
    /// The value was never returned by this library as a handle of this kind.
    NotAHandle,
}

/// Largest slot index a handle can encode.
const MAX_SLOTS: usize = 1 << 24;

/// One slot: the generation (odd = live), the free-stack link, the value.
#[repr(align(64))]
struct Slot<T> {
    generation: AtomicU32,
    /// Next free slot plus one (0 = end of the stack); meaningful only while free.
    next_free: AtomicU32,
    value: UnsafeCell<MaybeUninit<T>>,
}

impl<T> Slot<T> {
    const fn empty() -> Slot<T> {
        Slot {
            generation: AtomicU32::new(0),
            next_free: AtomicU32::new(0),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }
}

/// A fixed table of `N` handle slots holding values of type `T`, for handles whose low
/// byte is `KIND` (a [`HandleKind`]). The kind is a type parameter rather than a field so
/// that an empty table is all zero bytes: a `static` table then lives in `.bss` (no file
/// size, no memory until used) instead of `.data`.
pub(crate) struct HandleTable<T, const N: usize, const KIND: u8> {
    slots: [Slot<T>; N],
    /// Free stack head: `tag << 32 | (index + 1)`; index part 0 = empty.
    free_head: AtomicU64,
    /// Slots `unused..N` were never handed out (they are free without being on the stack).
    unused: AtomicU32,
}

// SAFETY: a slot's value is written only by the thread that popped the slot from the free
// stack (exclusive until its generation is published with Release), read through shared
// references only while the generation says live (T: Sync makes that sound across threads),
// and moved out only by the one thread whose compare-exchange ended the generation. Values
// cross threads (inserted on one, taken on another), hence T: Send.
unsafe impl<T: Send + Sync, const N: usize, const KIND: u8> Sync for HandleTable<T, N, KIND> {}

impl<T, const N: usize, const KIND: u8> HandleTable<T, N, KIND> {
    /// An empty table (usable in a `static`).
    pub(crate) const fn new() -> Self {
        assert!(N < MAX_SLOTS, "too many slots for the handle encoding");
        assert!(KIND != 0, "a handle kind is never 0");
        HandleTable {
            slots: [const { Slot::empty() }; N],
            free_head: AtomicU64::new(0),
            unused: AtomicU32::new(0),
        }
    }

    /// Slots in the table.
    pub(crate) const fn capacity(&self) -> usize {
        N
    }

    fn encode(&self, index: usize, generation: u32) -> usize {
        ((generation as usize) << 32) | (index << 8) | KIND as usize
    }

    /// The slot a handle names, and the generation it carries.
    fn decode(&self, handle: usize) -> Result<(&Slot<T>, usize, u32), HandleError> {
        if handle & 0xff != KIND as usize {
            return Err(HandleError::NotAHandle);
        }
        let index = (handle >> 8) & (MAX_SLOTS - 1);
        let generation = (handle >> 32) as u32;
        match self.slots.get(index) {
            Some(slot) if generation % 2 == 1 => Ok((slot, index, generation)),
            _ => Err(HandleError::NotAHandle),
        }
    }

    /// Classifies a generation mismatch: an older generation of a real slot is a stale
    /// handle; anything else was never handed out.
    fn mismatch(handle_generation: u32, slot_generation: u32) -> HandleError {
        // Generations only grow (wrapping): a handle from this slot's past is "behind".
        let behind = slot_generation.wrapping_sub(handle_generation);
        if behind != 0 && behind < 1 << 31 {
            HandleError::Stale
        } else {
            HandleError::NotAHandle
        }
    }

    /// Takes a free slot, to be filled with [`Vacant::insert`] (or given back when the
    /// [`Vacant`] is dropped). `None` when every slot is taken. Taking the slot first lets a
    /// caller fail before doing work (connecting, claiming ring space) it would have to undo.
    pub(crate) fn vacant(&self) -> Option<Vacant<'_, T, N, KIND>> {
        self.pop_free().map(|index| Vacant { table: self, index })
    }

    /// Stores `value` in a free slot and returns its handle, or gives the value back when
    /// every slot is taken.
    #[cfg(test)]
    pub(crate) fn insert(&self, value: T) -> Result<usize, T> {
        match self.vacant() {
            Some(vacant) => Ok(vacant.insert(value)),
            None => Err(value),
        }
    }

    /// The live value behind `handle`.
    ///
    /// # Safety
    /// No other thread may take (close) this handle while the returned reference lives
    /// (the C contract: close once, after every other use has returned).
    pub(crate) unsafe fn get(&self, handle: usize) -> Result<&T, HandleError> {
        let (slot, _, generation) = self.decode(handle)?;
        // Acquire pairs with the Release in `insert`: the value is initialised.
        let current = slot.generation.load(Ordering::Acquire);
        if current != generation {
            return Err(Self::mismatch(generation, current));
        }
        // SAFETY: the generation is the live one, so the slot holds an initialised value
        // (written before the Release store we synchronised with), and by this function's
        // contract nobody moves it out while the reference lives. Only shared references
        // are handed out by `get`.
        Ok(unsafe { (*slot.value.get()).assume_init_ref() })
    }

    /// The live value behind `handle`, mutably.
    ///
    /// # Safety
    /// As for [`HandleTable::get`], and no other thread may use this handle at all while
    /// the returned reference lives.
    // A mutable borrow from `&self` is the point of a handle table (the slot is the
    // handle's, not the table's); uniqueness is this function's safety contract.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn get_mut(&self, handle: usize) -> Result<&mut T, HandleError> {
        let (slot, _, generation) = self.decode(handle)?;
        let current = slot.generation.load(Ordering::Acquire);
        if current != generation {
            return Err(Self::mismatch(generation, current));
        }
        // SAFETY: live and initialised as in `get`; by this function's contract this thread
        // is the handle's only user for the reference's lifetime, so it is unique.
        Ok(unsafe { (*slot.value.get()).assume_init_mut() })
    }

    /// Ends the handle's life and moves its value out. Exactly one of several concurrent
    /// calls with the same handle wins; the others get [`HandleError::Stale`].
    pub(crate) fn take(&self, handle: usize) -> Result<T, HandleError> {
        let (slot, index, generation) = self.decode(handle)?;
        // AcqRel: Acquire to see the value written before the live generation was
        // published; the generation change is what makes this thread the value's owner.
        if let Err(current) = slot.generation.compare_exchange(
            generation,
            generation.wrapping_add(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            return Err(Self::mismatch(generation, current));
        }
        // SAFETY: the compare-exchange moved the generation from live to free, which only
        // one thread can do per generation: this thread now owns the initialised value, and
        // no new `get` can succeed. The slot is reused only after `push_free` below, so the
        // value is read out exactly once.
        let value = unsafe { (*slot.value.get()).assume_init_read() };
        self.push_free(index);
        Ok(value)
    }

    fn pop_free(&self) -> Option<usize> {
        let mut head = self.free_head.load(Ordering::Acquire);
        loop {
            let top = head as u32;
            if top == 0 {
                break;
            }
            let index = (top - 1) as usize;
            // A racing pop may hand this slot out meanwhile and its link change: harmless,
            // the tag in the head word changes too, so the compare-exchange below fails.
            let next = self.slots[index].next_free.load(Ordering::Relaxed);
            let new_head = ((head >> 32).wrapping_add(1) << 32) | u64::from(next);
            match self.free_head.compare_exchange_weak(
                head,
                new_head,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(index),
                Err(actual) => head = actual,
            }
        }
        // The stack is empty: take a slot never used before, if any is left.
        self.unused
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < N as u32).then_some(n + 1)
            })
            .ok()
            .map(|n| n as usize)
    }

    fn push_free(&self, index: usize) {
        let slot = &self.slots[index];
        let index = index as u64;
        let mut head = self.free_head.load(Ordering::Relaxed);
        loop {
            slot.next_free.store(head as u32, Ordering::Relaxed);
            let new_head = ((head >> 32).wrapping_add(1) << 32) | (index + 1);
            // Release: the next owner of the slot sees everything done with it here.
            match self.free_head.compare_exchange_weak(
                head,
                new_head,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => head = actual,
            }
        }
    }
}

/// A free slot taken from a [`HandleTable`], not yet holding a value. Dropping it puts the
/// slot back.
pub(crate) struct Vacant<'t, T, const N: usize, const KIND: u8> {
    table: &'t HandleTable<T, N, KIND>,
    index: usize,
}

impl<T, const N: usize, const KIND: u8> Vacant<'_, T, N, KIND> {
    /// Moves `value` into the slot and returns the new live handle.
    pub(crate) fn insert(mut self, value: T) -> usize {
        // SAFETY: the pointer is this Vacant's own slot (see `as_mut_ptr`); writing drops
        // nothing, and the value is fully initialised before `publish`.
        unsafe {
            self.as_mut_ptr().write(value);
            self.publish()
        }
    }

    /// Where the value goes: for building it in place (a large value written field by
    /// field, or a callee writing its result straight into the slot) instead of moving it
    /// in. The memory is uninitialised until written.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut T {
        // The slot came off the free stack (or the never-used range) into this Vacant, so
        // this thread owns it exclusively: its generation is even, no handle to it is live,
        // and no other thread can pop it until it is pushed back.
        self.table.slots[self.index].value.get().cast::<T>()
    }

    /// Makes the slot live and returns its handle.
    ///
    /// # Safety
    /// The value at [`Vacant::as_mut_ptr`] must be fully initialised.
    pub(crate) unsafe fn publish(self) -> usize {
        let slot = &self.table.slots[self.index];
        let generation = slot.generation.load(Ordering::Relaxed).wrapping_add(1);
        // Release: a thread that sees the live generation sees the value written before.
        slot.generation.store(generation, Ordering::Release);
        let handle = self.table.encode(self.index, generation);
        // The slot is live now: it must not go back on the free stack.
        std::mem::forget(self);
        handle
    }
}

impl<T, const N: usize, const KIND: u8> Drop for Vacant<'_, T, N, KIND> {
    fn drop(&mut self) {
        self.table.push_free(self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const P: u8 = HandleKind::Producer as u8;
    const R: u8 = HandleKind::Reservation as u8;

    #[test]
    fn insert_get_take() {
        let table: HandleTable<String, 4, P> = HandleTable::new();
        let h = table.insert("a".to_owned()).expect("room");
        // SAFETY: single-threaded test; nothing takes the handle while the reference lives.
        assert_eq!(unsafe { table.get(h) }.map(String::as_str), Ok("a"));
        assert_eq!(table.take(h).as_deref(), Ok("a"));
        // SAFETY: as above.
        assert_eq!(unsafe { table.get(h) }, Err(HandleError::Stale));
        assert_eq!(table.take(h), Err(HandleError::Stale));
    }

    #[test]
    fn stale_handle_does_not_reach_the_reused_slot() {
        let table: HandleTable<u32, 1, R> = HandleTable::new();
        let old = table.insert(1).expect("room");
        assert_eq!(table.take(old), Ok(1));
        let new = table.insert(2).expect("the slot is free again");
        assert_ne!(old, new);
        assert_eq!(table.take(old), Err(HandleError::Stale));
        // SAFETY: single-threaded test.
        assert_eq!(unsafe { table.get(new) }, Ok(&2));
    }

    #[test]
    fn full_table_gives_the_value_back() {
        let table: HandleTable<u32, 2, P> = HandleTable::new();
        let a = table.insert(1).expect("room");
        let _b = table.insert(2).expect("room");
        assert_eq!(table.insert(3), Err(3));
        assert_eq!(table.take(a), Ok(1));
        assert!(table.insert(4).is_ok());
    }

    #[test]
    fn foreign_values_are_not_handles() {
        let producers: HandleTable<u32, 8, P> = HandleTable::new();
        let reservations: HandleTable<u32, 8, R> = HandleTable::new();
        let r = reservations.insert(1).expect("room");
        assert_eq!(producers.take(r), Err(HandleError::NotAHandle));
        for junk in [
            0usize,
            1,
            0xa5,
            usize::MAX,
            0xdead_beef,
            0x5a5a_5a5a_5a5a_5a5a,
        ] {
            assert_eq!(
                producers.take(junk),
                Err(HandleError::NotAHandle),
                "{junk:#x}"
            );
        }
        // An index past the table, with the right kind and a live-looking generation.
        let past = (1usize << 32) | (100 << 8) | HandleKind::Producer as usize;
        assert_eq!(producers.take(past), Err(HandleError::NotAHandle));
    }

    #[test]
    fn concurrent_insert_take_keeps_every_value_once() {
        static TABLE: HandleTable<u64, 64, R> = HandleTable::new();
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        let value = (t << 32) | i;
                        let h = TABLE.insert(value).expect("at most 4 live at once");
                        assert_eq!(TABLE.take(h), Ok(value));
                        assert_eq!(TABLE.take(h), Err(HandleError::Stale));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        // Every slot went back: all 64 can be taken at once.
        let handles: Vec<_> = (0..64).map(|i| TABLE.insert(i).expect("room")).collect();
        assert!(TABLE.insert(99).is_err());
        for h in handles {
            assert!(TABLE.take(h).is_ok());
        }
    }

    #[test]
    fn concurrent_double_take_has_one_winner() {
        let table = Arc::new(HandleTable::<u32, 4, R>::new());
        for _ in 0..2_000 {
            let h = table.insert(7).expect("room");
            let wins: usize = (0..2)
                .map(|_| {
                    let table = Arc::clone(&table);
                    std::thread::spawn(move || usize::from(table.take(h).is_ok()))
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().expect("thread"))
                .sum();
            assert_eq!(wins, 1);
        }
    }
}
