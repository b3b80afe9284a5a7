//! The `camview` binary: parse arguments, run the browser or a command, print errors with
//! their whole cause chain, and map the outcome to an exit code.

use clap::Parser;

fn main() {
    let cli = camview::cli::Cli::parse();
    let result = match cli.command {
        Some(command) => camview::cli::run(command),
        None => camview::ui::run(&cli.browse).map(|()| 0),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("camview: error: {e:#}");
            std::process::exit(1);
        }
    }
}
