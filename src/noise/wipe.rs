//! Erasing secrets that live in other crates' types. snow keeps a handshake's chaining key,
//! hash and psk in its `HandshakeState`, the handshake's cipher key in its cipher and key
//! material in its hasher's buffer, and erases none of them; rand_chacha does not erase a
//! generator's state (which here is derived from the seed of an ephemeral key). [`Wiped`] holds
//! such a value on the heap and overwrites all of its bytes with zeros once it is dropped, so a
//! handshake's secrets are gone the moment its state is dropped: when it completes, fails or
//! is superseded.
//!
//! The only `unsafe` of the protocol core besides the FFI in `crypto`.

use std::alloc::{Layout, dealloc};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// A boxed value whose memory is zeroed after the value is dropped.
pub struct Wiped<T: ?Sized>(NonNull<T>);

// SAFETY: `Wiped<T>` owns its `T` exactly as a `Box<T>` does.
unsafe impl<T: ?Sized + Send> Send for Wiped<T> {}
// SAFETY: as above; shared access only hands out `&T`.
unsafe impl<T: ?Sized + Sync> Sync for Wiped<T> {}

impl<T> Wiped<T> {
    /// Moves `value` to the heap (the place it was moved from is not erased: build secrets
    /// into a value after it is wrapped, where that matters).
    pub fn new(value: T) -> Self {
        Wiped::from_box(Box::new(value))
    }
}

impl<T: ?Sized> Wiped<T> {
    /// Takes over a box (for trait objects: box the value as the trait, then wrap it).
    pub fn from_box(b: Box<T>) -> Self {
        // Box::into_raw never returns null.
        Wiped(NonNull::from(Box::leak(b)))
    }
}

impl<T: ?Sized> Deref for Wiped<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the pointer came from a live box that only `drop` frees.
        unsafe { self.0.as_ref() }
    }
}

impl<T: ?Sized> DerefMut for Wiped<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
        unsafe { self.0.as_mut() }
    }
}

impl<T: ?Sized> Drop for Wiped<T> {
    fn drop(&mut self) {
        let ptr = self.0.as_ptr();
        // SAFETY: the value is live (see `deref`) and dropped here only; the box's memory is
        // then freed with the layout it was allocated with.
        unsafe {
            let layout = drop_and_zero(ptr);
            if layout.size() != 0 {
                dealloc(ptr.cast::<u8>(), layout);
            }
        }
    }
}

/// Drops the value at `ptr` and overwrites its bytes with zeros; returns its layout.
///
/// # Safety
/// `ptr` must point to a live, initialised `T` that nothing uses afterwards as a `T`.
unsafe fn drop_and_zero<T: ?Sized>(ptr: *mut T) -> Layout {
    // SAFETY: live (the caller's promise); the layout is read before the value is dropped.
    let layout = Layout::for_value(unsafe { &*ptr });
    // SAFETY: dropped exactly once, here.
    unsafe { std::ptr::drop_in_place(ptr) };
    let bytes = ptr.cast::<u8>();
    for i in 0..layout.size() {
        // SAFETY: within the value's `layout.size()` bytes, which no value occupies any more;
        // volatile, so the writes are not removed as stores to memory about to be freed.
        unsafe { std::ptr::write_volatile(bytes.add(i), 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    layout
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::ManuallyDrop;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// 48 bytes: a drop counter of its own test, and 40 bytes of secret.
    struct Secret(&'static AtomicUsize, [u8; 40]);

    impl Drop for Secret {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_value_is_dropped_once_then_its_bytes_are_zero() {
        // In memory that stays the test's, so the bytes can be read after the drop.
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        let mut slot = ManuallyDrop::new(Secret(&DROPS, [0xa5; 40]));
        let ptr: *mut Secret = &mut *slot;
        // SAFETY: `slot` holds a live Secret that is never used as one again.
        let layout = unsafe { drop_and_zero(ptr) };
        assert_eq!(DROPS.load(Ordering::SeqCst), 1);
        assert_eq!(layout.size(), 48);
        // SAFETY: all 48 bytes were written (zeros) by drop_and_zero.
        let bytes: [u8; 48] = unsafe { std::ptr::read(ptr.cast()) };
        assert_eq!(bytes, [0; 48]);
    }

    #[test]
    fn boxed_values_and_trait_objects_are_used_dropped_and_freed() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        let mut s = Wiped::new(Secret(&DROPS, [7; 40]));
        s.1[0] = 9;
        assert_eq!(s.1[..2], [9, 7]);
        drop(s);
        assert_eq!(DROPS.load(Ordering::SeqCst), 1);
        let dynamic: Wiped<dyn AsRef<[u8]>> = Wiped::from_box(Box::new(vec![1u8, 2, 3]));
        assert_eq!((*dynamic).as_ref(), &[1, 2, 3]);
        let empty = Wiped::new(());
        drop((dynamic, empty));
    }
}
