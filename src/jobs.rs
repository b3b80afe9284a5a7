//! Work off the UI thread: a newest-wins mailbox, one worker type that serves it on a named
//! thread, and panic containment, so that one job that trips a bug reports an error instead
//! of taking the browser (and the terminal's state) down.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// A single-slot mailbox: a new job replaces the one still waiting, so a burst of requests
/// (scrolling through a folder) costs one job, not one per request.
#[derive(Debug)]
pub struct Mailbox<T> {
    state: Mutex<Slot<T>>,
    ready: Condvar,
}

/// The mailbox was closed: its consumer should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

#[derive(Debug)]
struct Slot<T> {
    job: Option<T>,
    closed: bool,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new(Slot {
                job: None,
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }
}

impl<T> Mailbox<T> {
    /// Posts `job`, returning the job it replaced (which will now never run).
    pub fn put(&self, job: T) -> Option<T> {
        let mut slot = self.lock();
        let old = slot.job.replace(job);
        self.ready.notify_one();
        old
    }

    /// Posts `job` unless the job waiting is one `keep` wants kept; true if posted.
    pub fn offer(&self, job: T, keep: impl FnOnce(&T) -> bool) -> bool {
        let mut slot = self.lock();
        if slot.job.as_ref().is_some_and(keep) {
            return false;
        }
        slot.job = Some(job);
        self.ready.notify_one();
        true
    }

    /// Changes the waiting job in place (`None`: nothing waits), then wakes the consumer if
    /// a job waits: for requests that must merge with the one waiting instead of replacing it.
    pub fn amend(&self, change: impl FnOnce(&mut Option<T>)) {
        let mut slot = self.lock();
        change(&mut slot.job);
        if slot.job.is_some() {
            self.ready.notify_one();
        }
    }

    /// The waiting job, without waiting; [`Closed`] once the mailbox is closed.
    pub fn try_take(&self) -> Result<Option<T>, Closed> {
        let mut slot = self.lock();
        if slot.closed {
            return Err(Closed);
        }
        Ok(slot.job.take())
    }

    /// Waits for a job; `None` once the mailbox is closed.
    pub fn take(&self) -> Option<T> {
        let mut slot = self.lock();
        loop {
            if slot.closed {
                return None;
            }
            if let Some(job) = slot.job.take() {
                return Some(job);
            }
            slot = self.ready.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// True when a job is waiting (so work in progress may stop early).
    pub fn has_job(&self) -> bool {
        let slot = self.lock();
        slot.job.is_some() || slot.closed
    }

    /// True when a job waits that `test` accepts, or the mailbox is closed: work in progress
    /// may stop early for some jobs and not for others.
    pub fn has_job_that(&self, test: impl FnOnce(&T) -> bool) -> bool {
        let slot = self.lock();
        slot.closed || slot.job.as_ref().is_some_and(test)
    }

    /// Wakes the consumer for good.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot<T>> {
        // A panic elsewhere must not make the mailbox unusable for the rest.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A thread that serves the jobs posted to its mailbox. Dropping it closes the mailbox: the
/// thread ends after the job in hand, which is not waited for (a forward pass cannot be
/// interrupted, and quitting must not wait for it).
pub struct Worker<T> {
    mailbox: Arc<Mailbox<T>>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Worker<T> {
    /// Starts a thread named `name` that runs `serve` on the mailbox until it returns. Panics
    /// on that thread are contained: see [`is_contained`].
    pub fn spawn(
        name: &'static str,
        serve: impl FnOnce(&Mailbox<T>) + Send + 'static,
    ) -> std::io::Result<Self> {
        let mailbox = Arc::new(Mailbox::default());
        let inbox = Arc::clone(&mailbox);
        let thread = spawn_contained(name, move || serve(&inbox))?;
        Ok(Self {
            mailbox,
            thread: Some(thread),
        })
    }

    /// Posts `job`, replacing any job still waiting.
    pub fn send(&self, job: T) {
        self.mailbox.put(job);
    }

    /// Posts `job` unless the job waiting is one `keep` wants kept.
    pub fn offer(&self, job: T, keep: impl FnOnce(&T) -> bool) {
        self.mailbox.offer(job, keep);
    }

    /// Changes the job waiting in place, or posts one: see [`Mailbox::amend`].
    pub fn amend(&self, change: impl FnOnce(&mut Option<T>)) {
        self.mailbox.amend(change);
    }
}

impl<T> Drop for Worker<T> {
    fn drop(&mut self) {
        self.mailbox.close();
        drop(self.thread.take());
    }
}

/// Names of the threads whose panics are contained, registered as they are spawned.
static CONTAINED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

/// Spawns a thread whose panics are contained: the jobs it runs go through
/// [`contain_panic`], and the panic hook leaves the terminal alone for it.
pub fn spawn_contained(
    name: &'static str,
    run: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    register_contained(name);
    std::thread::Builder::new().name(name.into()).spawn(run)
}

fn register_contained(name: &'static str) {
    let mut names = CONTAINED.lock().unwrap_or_else(|e| e.into_inner());
    if !names.contains(&name) {
        names.push(name);
    }
}

/// True when a panic on the thread named `name` is caught and reported as its job's error.
pub fn is_contained(name: &str) -> bool {
    CONTAINED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&name)
}

/// A job that panicked: a bug in camview, with the panic's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("internal error (a bug in camview): {0}")]
pub struct Panicked(String);

/// Runs `job`, turning a panic into its error: one image that trips a bug must not take the
/// browser down.
pub fn contain_panic<T, E: From<Panicked>>(job: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).unwrap_or_else(|payload| {
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        Err(Panicked(why).into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_job_wins() {
        let mailbox = Mailbox::default();
        assert_eq!(mailbox.put(1), None);
        assert_eq!(mailbox.put(2), Some(1));
        assert_eq!(mailbox.put(3), Some(2));
        assert!(mailbox.has_job());
        assert_eq!(mailbox.take(), Some(3));
        assert!(!mailbox.has_job());
        // An offer gives way to a job that must not be lost.
        mailbox.put(4);
        assert!(!mailbox.offer(5, |&waiting| waiting == 4));
        assert!(mailbox.offer(6, |&waiting| waiting == 5));
        assert_eq!(mailbox.take(), Some(6));
        // An amendment merges with the job waiting, or posts one.
        mailbox.amend(|job| *job = Some(job.unwrap_or(0) + 10));
        mailbox.amend(|job| *job = Some(job.unwrap_or(0) + 10));
        assert_eq!(mailbox.try_take(), Ok(Some(20)));
        assert_eq!(mailbox.try_take(), Ok(None));
        mailbox.close();
        assert_eq!(mailbox.take(), None);
        assert_eq!(mailbox.try_take(), Err(Closed));
    }

    #[test]
    fn a_panic_in_a_job_becomes_its_error() {
        let r: Result<(), Panicked> = contain_panic(|| panic!("boom"));
        assert_eq!(
            r.unwrap_err().to_string(),
            "internal error (a bug in camview): boom"
        );
        assert_eq!(contain_panic(|| Ok::<_, Panicked>(3)), Ok(3));
    }

    #[test]
    fn take_waits_for_a_job_from_another_thread() {
        let mailbox = Arc::new(Mailbox::default());
        let sender = Arc::clone(&mailbox);
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            sender.put("job");
        });
        assert_eq!(mailbox.take(), Some("job"));
        t.join().unwrap();
    }
}
