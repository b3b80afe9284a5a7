//! A layer's fork-join: tasks handed out from a counter to the rayon pool's threads, and a
//! caller that waits for them spinning, not sleeping.
//!
//! rayon's idle threads yield a few dozen times and then sleep on a futex; a layer whose
//! other band runs later than its own paid for that thread's wake-up (tens of µs on a
//! virtual machine, more when the host is busy), about forty times a ResNet-50 pass. The
//! passes of a forward are short and back to back, so here the waits spin, as OpenVINO's and
//! ONNX Runtime's do, and [`KeepAwake`] keeps the pool's other threads looking for work
//! between layers.

#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Runs `task(i)` for every `i` in `0..count`: on the calling thread and, where there are
/// several tasks, on the pool's other threads, each taking its tasks one by one from a
/// contiguous range of its own and then from the others' (so a thread the host delays takes
/// fewer). Returns once every task has finished; a task's panic is resumed here.
pub(crate) fn for_each(count: usize, task: impl Fn(usize) + Sync) {
    for_each_init(count, || (), |(), i| task(i));
}

/// [`for_each`] with per-thread state: `init` makes it on a thread's first task, and that
/// thread's later tasks reuse it.
pub(crate) fn for_each_init<S>(
    count: usize,
    init: impl Fn() -> S + Sync,
    task: impl Fn(&mut S, usize) + Sync,
) {
    if rayon::current_thread_index().is_none() {
        // Outside the pool (a test calling a kernel, say) the caller would spin on a CPU
        // the pool's threads need: it blocks in rayon instead.
        use rayon::prelude::*;
        (0..count)
            .into_par_iter()
            .for_each_init(&init, |s, i| task(s, i));
        return;
    }
    let threads = rayon::current_num_threads().min(count);
    if threads <= 1 {
        let mut state = init();
        (0..count).for_each(|i| task(&mut state, i));
        return;
    }
    // Each thread starts on a range of its own, the pool thread of index t on the t-th: so
    // a thread meets the rows (or columns) it wrote in the layer before in its own cache,
    // where a shared counter dealt them out by turns. Then it helps with the others' ranges.
    // Against one shared counter: ResNet-50 0.98 × (f32 and bf16, one image or eight),
    // ResNeXt-50 0.99 × with its grouped layers 0.87–0.95 × (docs/performance.md).
    let homes = threads;
    let start = |home: usize| home * count / homes;
    let next: Vec<AtomicUsize> = (0..homes).map(|h| AtomicUsize::new(start(h))).collect();
    let finished = AtomicUsize::new(0);
    let work = || {
        let mut state = None;
        let me = rayon::current_thread_index().unwrap_or(0);
        for k in 0..homes {
            let home = (me + k) % homes;
            loop {
                let i = next[home].fetch_add(1, Ordering::Relaxed);
                if i >= start(home + 1) {
                    break;
                }
                // Counted when dropped, so a panicking task does not leave the caller spinning.
                let _finished = Finished(&finished);
                task(state.get_or_insert_with(&init), i);
            }
        }
    };
    rayon::in_place_scope(|scope| {
        for _ in 1..threads {
            scope.spawn(|_| work());
        }
        work();
        // Runs a job of the pool where one is waiting: our own helpers that no thread took
        // yet, or a task some other helper split off.
        let mut idle = Idle::default();
        while finished.load(Ordering::Acquire) < count {
            idle.help();
        }
    });
}

/// [`for_each`] over the `size`-long chunks of `slice` (the last may be shorter).
pub(crate) fn for_each_chunk_mut<T: Send>(
    slice: &mut [T],
    size: usize,
    task: impl Fn(usize, &mut [T]) + Sync,
) {
    for_each_chunk_mut_init(slice, size, || (), |(), i, chunk| task(i, chunk));
}

/// [`for_each_init`] over the `size`-long chunks of `slice` (the last may be shorter).
pub(crate) fn for_each_chunk_mut_init<T: Send, S>(
    slice: &mut [T],
    size: usize,
    init: impl Fn() -> S + Sync,
    task: impl Fn(&mut S, usize, &mut [T]) + Sync,
) {
    assert!(size > 0, "chunks of no elements");
    let len = slice.len();
    let base = Shared(slice.as_mut_ptr());
    for_each_init(len.div_ceil(size), init, |state, i| {
        let start = i * size;
        // SAFETY: `for_each_init` runs every index once, so the chunks handed out are
        // disjoint ranges inside `slice`, whose exclusive borrow lasts until it returns.
        let chunk =
            unsafe { std::slice::from_raw_parts_mut(base.get().add(start), size.min(len - start)) };
        task(state, i, chunk);
    });
}

/// [`for_each_init`] over `items`, each handed to its task by value.
pub(crate) fn for_each_item_init<I: Send, S>(
    items: Vec<I>,
    init: impl Fn() -> S + Sync,
    task: impl Fn(&mut S, usize, I) + Sync,
) {
    let slots: Vec<Mutex<Option<I>>> = items.into_iter().map(|i| Mutex::new(Some(i))).collect();
    for_each_init(slots.len(), init, |state, i| {
        let item = slots[i].lock().unwrap_or_else(|e| e.into_inner()).take();
        task(state, i, item.expect("every index runs once"));
    });
}

/// Keeps the pool's other threads looking for work, spinning, until dropped: started for
/// one forward pass, so that each layer's tasks are taken at once instead of after a
/// sleeping thread's wake-up.
pub(crate) struct KeepAwake(Arc<AtomicBool>);

impl KeepAwake {
    pub(crate) fn start() -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let caller = rayon::current_thread_index();
        let stop = Arc::clone(&done);
        rayon::spawn_broadcast(move |thread| {
            // The caller's own copy runs whenever it next waits, perhaps inside this pass:
            // it must not spin there, or the pass would never finish.
            if Some(thread.index()) == caller {
                return;
            }
            let mut idle = Idle::default();
            while !stop.load(Ordering::Acquire) {
                idle.help();
            }
        });
        Self(done)
    }
}

impl Drop for KeepAwake {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A waiting thread's turn: it runs a job of the pool if one is waiting, else spins, giving
/// its CPU to the system now and then (a thread of ours that was preempted may be waiting for
/// it).
#[derive(Default)]
struct Idle {
    rounds: u32,
}

impl Idle {
    fn help(&mut self) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            self.rounds = 0;
            return;
        }
        self.rounds = self.rounds.wrapping_add(1);
        if self.rounds.is_multiple_of(256) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

struct Finished<'a>(&'a AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

struct Shared<T>(*mut T);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Shared<T> {}

impl<T> Shared<T> {
    /// Through a method, so closures capture the whole `Sync` wrapper, not the raw field.
    fn get(self) -> *mut T {
        self.0
    }
}
// SAFETY: only used to hand out disjoint chunks of a slice of `Send` values.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Shared<T> {}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Runs `f` the way a forward pass runs its layers: on a pool thread, the pool's other
    /// threads kept awake.
    fn in_pass<R: Send>(f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap()
            .install(|| {
                let _awake = KeepAwake::start();
                f()
            })
    }

    #[test]
    fn every_task_runs_once_in_and_out_of_the_pool() {
        for count in [0, 1, 2, 3, 7, 100] {
            let check = || {
                let runs: Vec<AtomicUsize> = (0..count).map(|_| AtomicUsize::new(0)).collect();
                for_each(count, |i| {
                    runs[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(
                    runs.iter().all(|r| r.load(Ordering::Relaxed) == 1),
                    "{count}"
                );
            };
            check();
            in_pass(check);
        }
    }

    #[test]
    fn chunks_cover_the_slice_with_a_short_last_one() {
        for (len, size) in [(0, 3), (1, 3), (9, 3), (10, 3), (1000, 7)] {
            let check = || {
                let mut values = vec![usize::MAX; len];
                let inits = AtomicUsize::new(0);
                let init = || {
                    inits.fetch_add(1, Ordering::Relaxed);
                };
                for_each_chunk_mut_init(&mut values, size, init, |(), i, chunk| {
                    assert!(chunk.len() == size || (i + 1) * size >= len);
                    chunk.iter_mut().for_each(|v| *v = i);
                });
                let expected: Vec<usize> = (0..len).map(|j| j / size).collect();
                assert_eq!(values, expected, "{len} / {size}");
                inits.load(Ordering::Relaxed)
            };
            check();
            // In the pool, state is made once a thread, not once a task.
            assert!(in_pass(check) <= 3);
        }
    }

    #[test]
    fn items_go_to_their_tasks() {
        let mut out = [0; 50];
        let items: Vec<(usize, &mut i32)> = out.iter_mut().enumerate().collect();
        in_pass(|| {
            for_each_item_init(
                items,
                || (),
                |(), i, (j, slot)| {
                    assert_eq!(i, j);
                    *slot = i as i32 * 2;
                },
            )
        });
        assert!(out.iter().enumerate().all(|(i, &v)| v == i as i32 * 2));
    }

    #[test]
    fn nested_loops_finish() {
        let sum = AtomicUsize::new(0);
        in_pass(|| {
            for_each(5, |i| {
                for_each(4, |j| {
                    sum.fetch_add(i * 4 + j, Ordering::Relaxed);
                })
            })
        });
        assert_eq!(sum.into_inner(), (0..20).sum::<usize>());
    }

    #[test]
    fn a_panicking_task_panics_the_caller_without_hanging() {
        // Once in a task of the calling thread, once in one of a helper's.
        for on_caller in [true, false] {
            let panicked = AtomicBool::new(false);
            let result = std::panic::catch_unwind(|| {
                in_pass(|| {
                    let caller = std::thread::current().id();
                    for_each(7, |_| {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        let here = std::thread::current().id() == caller;
                        if here == on_caller && !panicked.swap(true, Ordering::Relaxed) {
                            panic!("a task fails");
                        }
                    })
                })
            });
            assert!(panicked.into_inner() && result.is_err());
        }
    }
}
