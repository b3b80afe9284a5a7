//! Reusable buffers for intermediate values that never leave a layer (the Winograd domain).
//!
//! Why: a forward pass needs the same few large buffers layer after layer; allocating them
//! afresh returns the memory to the kernel and faults it back in page by page (≈ 700 page
//! faults a pass). A small pool keeps them. Buffers come back with stale contents: every
//! user overwrites all of what it takes.

#![allow(unsafe_code)]

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

/// Free buffers, kept few: a pass uses at most two at a time per running convolution.
static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
const KEEP: usize = 4;

/// A buffer of exactly `len` values (stale contents), returned to the pool when dropped.
pub struct Buffer {
    data: Vec<f32>,
}

pub fn take(len: usize) -> Buffer {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    // The largest free buffer: it fits most often, and growing it keeps the pool small.
    let best = (0..pool.len()).max_by_key(|&i| pool[i].capacity());
    let mut data = best.map(|i| pool.swap_remove(i)).unwrap_or_default();
    drop(pool);
    data.resize(len, 0.0);
    Buffer { data }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < KEEP {
            pool.push(std::mem::take(&mut self.data));
        }
    }
}

impl Buffer {
    /// The buffer as twice as many 16-bit values (bfloat16 bits).
    pub fn as_bits(&self) -> &[u16] {
        // SAFETY: f32 is 4 bytes aligned to 4; any bits are a valid u16, and the slice covers
        // exactly the buffer's bytes, borrowed as the buffer is.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr().cast(), self.data.len() * 2) }
    }

    /// [`Self::as_bits`], mutable; any u16 bits written are valid f32 bits too.
    pub fn as_bits_mut(&mut self) -> &mut [u16] {
        // SAFETY: as in `as_bits`, borrowed mutably as the buffer is.
        unsafe {
            std::slice::from_raw_parts_mut(self.data.as_mut_ptr().cast(), self.data.len() * 2)
        }
    }
}

impl Deref for Buffer {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.data
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
}
