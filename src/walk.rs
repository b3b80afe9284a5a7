//! The one folder rule of camview, for the browser, `classify` and datasets alike: images are
//! files with a decodable extension; hidden entries (`.name`, such as macOS's `._photo.jpg`
//! resource forks) are skipped; folders come first, then natural, case-insensitive order
//! (`img2` before `img10`, `B` beside `b`); links are followed.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What a folder entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Folder,
    Image,
}

/// One sub-folder or image of a folder.
#[derive(Debug, Clone)]
pub struct FolderEntry {
    pub kind: EntryKind,
    pub path: PathBuf,
    pub name: OsString,
    /// Its size in bytes (a folder's as the file system gives it).
    pub size: u64,
    pub modified: Option<SystemTime>,
}

/// True for file names with an extension camview can decode.
pub fn is_image_path(path: &Path) -> bool {
    const EXTENSIONS: [&str; 9] = [
        "jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "jfif",
    ];
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The sub-folders and images of `dir`, in camview's order. This is the slow part of
/// browsing a large folder: one `stat` per entry.
pub fn read_folder(dir: &Path) -> std::io::Result<Vec<FolderEntry>> {
    let mut entries = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let Ok(item) = item else { continue };
        let name = item.file_name();
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = item.path();
        // Follow links: a link to a folder is a folder.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let kind = if meta.is_dir() {
            EntryKind::Folder
        } else if meta.is_file() && is_image_path(&path) {
            EntryKind::Image
        } else {
            continue;
        };
        entries.push(FolderEntry {
            kind,
            path,
            name,
            size: meta.len(),
            modified: meta.modified().ok(),
        });
    }
    entries.sort_by(|a, b| {
        let (an, bn) = (a.name.to_string_lossy(), b.name.to_string_lossy());
        (a.kind != EntryKind::Folder)
            .cmp(&(b.kind != EntryKind::Folder))
            .then_with(|| natord::compare_ignore_case(&an, &bn))
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(entries)
}

/// A folder that could not be read during a walk.
#[derive(Debug)]
pub struct WalkError {
    pub dir: PathBuf,
    pub error: std::io::Error,
}

/// Every image under `dir`, depth first in [`read_folder`]'s order, handed to `visit` one at
/// a time; a folder that cannot be read is handed over as an error and the walk goes on. A
/// folder reached twice through links is walked once, so a link to a parent ends.
pub fn images_under(dir: &Path, visit: &mut dyn FnMut(Result<PathBuf, WalkError>)) {
    let mut seen = HashSet::new();
    walk(dir, &mut seen, visit);
}

fn walk(
    dir: &Path,
    seen: &mut HashSet<PathBuf>,
    visit: &mut dyn FnMut(Result<PathBuf, WalkError>),
) {
    if let Ok(real) = std::fs::canonicalize(dir)
        && !seen.insert(real)
    {
        return;
    }
    match read_folder(dir) {
        Ok(entries) => {
            for entry in entries {
                match entry.kind {
                    EntryKind::Folder => walk(&entry.path, seen, visit),
                    EntryKind::Image => visit(Ok(entry.path)),
                }
            }
        }
        Err(error) => visit(Err(WalkError {
            dir: dir.to_path_buf(),
            error,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str) {
        std::fs::write(dir.join(name), b"").unwrap();
    }

    #[test]
    fn folders_first_natural_case_insensitive_hidden_and_other_files_skipped() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "img10.png",
            "img2.PNG",
            "B.jpg",
            "a.jpg",
            "._a.jpg",
            ".x.png",
            "notes.txt",
        ] {
            touch(dir.path(), name);
        }
        std::fs::create_dir(dir.path().join("zoo")).unwrap();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        let names: Vec<_> = read_folder(dir.path())
            .unwrap()
            .into_iter()
            .map(|e| e.name.into_string().unwrap())
            .collect();
        assert_eq!(names, ["zoo", "a.jpg", "B.jpg", "img2.PNG", "img10.png"]);
    }

    #[test]
    #[cfg(unix)]
    fn a_walk_visits_every_image_once_even_through_a_link_to_a_parent() {
        let dir = tempfile::tempdir().unwrap();
        let class = dir.path().join("n01440764");
        std::fs::create_dir(&class).unwrap();
        touch(&class, "fish.jpg");
        touch(&class, "._fish.jpg");
        touch(dir.path(), "top.png");
        std::os::unix::fs::symlink(dir.path(), class.join("loop")).unwrap();
        let mut found = Vec::new();
        images_under(dir.path(), &mut |item| found.push(item.unwrap()));
        assert_eq!(found, [class.join("fish.jpg"), dir.path().join("top.png")]);
    }
}
