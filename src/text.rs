//! Making untrusted names safe to print: control characters and invalid UTF-8 in file names
//! are shown escaped, never sent raw to the terminal.

use std::ffi::OsStr;
use std::fmt::Write;
use std::path::Path;

/// `name` with control characters as `\u{1b}` and invalid UTF-8 bytes as `\xE9`.
pub fn printable(name: &OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for chunk in name.as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
    out
}

/// [`printable`] of a whole path.
pub fn printable_path(path: &Path) -> String {
    printable(path.as_os_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn escapes_controls_and_invalid_bytes() {
        let name = OsStr::from_bytes(b"caf\xe9 \x1b[31mcat\n.png");
        assert_eq!(printable(name), "caf\\xE9 \\u{1b}[31mcat\\u{a}.png");
        assert_eq!(printable(OsStr::new("chat noir é.png")), "chat noir é.png");
    }
}
