//! The `camview` binary: parse arguments, run the browser or a command, print errors with
//! their whole cause chain, and map the outcome to an exit code: 0 success, 1 some inputs
//! failed (the rest were done), 2 bad usage (clap) or an error that stopped the work.

use clap::Parser;

fn main() {
    let cli = camview::cli::Cli::parse();
    let result = match cli.command {
        Some(command) => camview::cli::run(command),
        None => camview::ui::run(&cli.browse.config()).map(|()| 0),
    };
    match result {
        Ok(code) => std::process::exit(code),
        // A closed pipe (`camview classify … | head`) is the reader's choice, not an error.
        Err(e) if is_broken_pipe(&e) => std::process::exit(0),
        Err(e) => {
            eprintln!("camview: error: {e:#}");
            std::process::exit(2);
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
