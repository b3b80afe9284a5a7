//! Debug timings, written to the file named by `CAMVIEW_LOG` (nothing when unset).

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

struct Log {
    start: Instant,
    file: Option<Mutex<std::fs::File>>,
}

fn log() -> &'static Log {
    static LOG: OnceLock<Log> = OnceLock::new();
    LOG.get_or_init(|| Log {
        start: Instant::now(),
        file: std::env::var_os("CAMVIEW_LOG")
            .and_then(|p| std::fs::File::create(p).ok())
            .map(Mutex::new),
    })
}

/// Starts the clock (call first thing, so times are relative to launch).
pub fn init() {
    let _ = log();
}

/// True when logging is on (to skip building messages otherwise).
pub fn enabled() -> bool {
    log().file.is_some()
}

/// Appends `message` with the time since launch.
pub fn debug(message: &str) {
    let log = log();
    if let Some(file) = &log.file {
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            file,
            "{:10.3} ms  {message}",
            log.start.elapsed().as_secs_f64() * 1e3
        );
    }
}
