//! The interactive browser (placeholder until the TUI lands).

/// Runs the browser on `args.dir`.
pub fn run(args: &crate::cli::BrowseArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "the interactive browser is not built yet ({})",
        args.dir.display()
    )
}
