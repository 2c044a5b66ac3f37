//! Functions written in Python.
//!
//! A client ships a module ([`ship_file`], [`ship_dir`]) as a
//! [`LibrarySource::Python`]; the executor stages its files in a private
//! directory (the sandbox's own `/tmp`) and hands them to the Python host,
//! `librfx_pyhost.so` (crate `python/host`), which embeds CPython: one
//! interpreter per executor process, loaded only for a lease that serves
//! Python, so that `rfx` itself never links libpython. The host is found
//! as [`host_path`] says; the executor manager shows it, and the
//! directories of the Python environment it was built for, read-only in
//! the sandbox, where the Python code is confined exactly as native code.
//!
//! A function is `def f(inp: memoryview) -> bytes | memoryview | int | None`
//! or `def f(inp, ctx)`; see docs/python.md.

use std::io;
use std::path::{Path, PathBuf};

use crate::session::{LibrarySource, ShippedFile, MAX_LIBRARY_BYTES};

#[cfg(feature = "executor")]
pub(crate) mod host;

/// Most files one shipped module may hold.
pub const MAX_FILES: usize = 4096;

/// Longest path of a shipped file, bytes.
pub const MAX_PATH: usize = 1024;

/// The Python host: `RFX_PYTHON_HOST`, else `librfx_pyhost.so` next to
/// the running `rfx` (where `scripts/test.sh` and docs/python.md build
/// it). `None` if neither exists.
pub fn host_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RFX_PYTHON_HOST") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let exe = std::env::current_exe().ok()?;
    let lib = exe.parent()?.join("librfx_pyhost.so");
    lib.is_file().then_some(lib)
}

/// Whether `s` is a Python identifier of ASCII letters, digits and `_`.
fn identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks a shipped module: `module` an identifier; the files within
/// [`MAX_FILES`] and [`MAX_LIBRARY_BYTES`]; every path relative, made of
/// plain names (no `.`, `..`, empty or over-long parts), unique; and the
/// module itself among them.
pub fn check(module: &str, files: &[ShippedFile]) -> Result<(), String> {
    if !identifier(module) {
        return Err(format!("module name {module:?} is not a Python identifier"));
    }
    if files.len() > MAX_FILES {
        return Err(format!("{} files; at most {MAX_FILES}", files.len()));
    }
    let total: usize = files.iter().map(|f| f.bytes.len()).sum();
    if total > MAX_LIBRARY_BYTES {
        return Err(format!(
            "{total} bytes of files; at most {MAX_LIBRARY_BYTES}"
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for f in files {
        let p = &f.path;
        let bad = p.is_empty()
            || p.len() > MAX_PATH
            || p.split('/').any(|c| {
                c.is_empty() || c == "." || c == ".." || c.len() > 255 || c.contains('\0')
            });
        if bad {
            return Err(format!("file path {p:?} is not a plain relative path"));
        }
        if !seen.insert(p.as_str()) {
            return Err(format!("file path {p:?} appears twice"));
        }
    }
    let entry = [format!("{module}.py"), format!("{module}/__init__.py")];
    if !entry.iter().any(|e| seen.contains(e.as_str())) {
        return Err(format!(
            "neither {module}.py nor {module}/__init__.py is among the files"
        ));
    }
    // A file must not also be a directory of another's path.
    for f in files {
        let parts: Vec<&str> = f.path.split('/').collect();
        for i in 1..parts.len() {
            let dir = parts[..i].join("/");
            if seen.contains(dir.as_str()) {
                return Err(format!("{dir:?} is both a file and a directory"));
            }
        }
    }
    Ok(())
}

/// A module of one file, `name.py`, shipped as module `name`.
pub fn ship_file(path: impl AsRef<Path>) -> io::Result<LibrarySource> {
    let path = path.as_ref();
    let module = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| identifier(s))
        .ok_or_else(|| invalid(format!("{}: not a module name", path.display())))?
        .to_owned();
    let bytes = std::fs::read(path)?;
    let files = vec![ShippedFile {
        path: format!("{module}.py"),
        bytes,
    }];
    check(&module, &files).map_err(invalid)?;
    Ok(LibrarySource::Python { module, files })
}

/// A directory shipped whole (its dependencies with it), put on `sys.path`;
/// `module` (`module.py` or the package `module/` in it) is the one
/// imported. Hidden entries and `__pycache__` stay behind; symbolic links
/// are followed.
pub fn ship_dir(dir: impl AsRef<Path>, module: &str) -> io::Result<LibrarySource> {
    let dir = dir.as_ref();
    let mut files = Vec::new();
    let mut total = 0usize;
    let mut todo = vec![(dir.to_path_buf(), String::new())];
    while let Some((at, rel)) = todo.pop() {
        for entry in std::fs::read_dir(&at)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name
                .to_str()
                .ok_or_else(|| invalid(format!("{}: a name that is not UTF-8", at.display())))?;
            if name.starts_with('.') || name == "__pycache__" {
                continue;
            }
            let path = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            let meta = std::fs::metadata(entry.path())?;
            if meta.is_dir() {
                todo.push((entry.path(), path));
            } else if meta.is_file() {
                total = total.saturating_add(meta.len() as usize);
                if files.len() >= MAX_FILES || total > MAX_LIBRARY_BYTES {
                    return Err(invalid(format!(
                        "{}: more than {MAX_FILES} files or {MAX_LIBRARY_BYTES} bytes",
                        dir.display()
                    )));
                }
                files.push(ShippedFile {
                    path,
                    bytes: std::fs::read(entry.path())?,
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    check(module, &files).map_err(invalid)?;
    Ok(LibrarySource::Python {
        module: module.to_owned(),
        files,
    })
}

/// [`ship_file`] for a `.py` file, [`ship_dir`] for a directory (`module`
/// is required there, and must match the file's name if given for one).
pub fn ship(path: impl AsRef<Path>, module: Option<&str>) -> io::Result<LibrarySource> {
    let path = path.as_ref();
    if path.is_dir() {
        let module = module.ok_or_else(|| {
            invalid(format!(
                "{}: a directory needs the module to import",
                path.display()
            ))
        })?;
        return ship_dir(path, module);
    }
    let shipped = ship_file(path)?;
    match (&shipped, module) {
        (LibrarySource::Python { module: m, .. }, Some(want)) if m != want => Err(invalid(
            format!("{} holds module {m}, not {want}", path.display()),
        )),
        _ => Ok(shipped),
    }
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why)
}

/// The directories the host's Python environment reads, for the sandbox
/// (the host says, without starting Python). Empty without a host or if
/// it cannot be opened (the executor then reports why at load).
#[cfg(feature = "executor")]
pub fn host_dirs() -> Vec<PathBuf> {
    host::dirs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str) -> ShippedFile {
        ShippedFile {
            path: path.into(),
            bytes: b"x = 1\n".to_vec(),
        }
    }

    #[test]
    fn shipped_paths_stay_beneath_the_staging_directory() {
        assert!(check("m", &[f("m.py")]).is_ok());
        assert!(check("pkg", &[f("pkg/__init__.py"), f("pkg/a.py"), f("dep.py")]).is_ok());
        for bad in [
            "../m.py",
            "/m.py",
            "a/../m.py",
            "./m.py",
            "a//m.py",
            "",
            "a/",
            "a/./b",
        ] {
            let e = check("m", &[f("m.py"), f(bad)]).unwrap_err();
            assert!(e.contains("plain relative path"), "{bad}: {e}");
        }
        assert!(check("m", &[f("m.py"), f("m.py")])
            .unwrap_err()
            .contains("twice"));
        assert!(check("m", &[f("other.py")])
            .unwrap_err()
            .contains("neither"));
        assert!(check("m-1", &[f("m-1.py")])
            .unwrap_err()
            .contains("identifier"));
        assert!(check("1m", &[f("1m.py")])
            .unwrap_err()
            .contains("identifier"));
        assert!(check("m", &[f("m.py"), f("a"), f("a/b.py")])
            .unwrap_err()
            .contains("both a file and a directory"));
        let long = "a".repeat(MAX_PATH + 1);
        assert!(check("m", &[f("m.py"), f(&long)]).is_err());
        let many: Vec<ShippedFile> = (0..=MAX_FILES).map(|i| f(&format!("f{i}.py"))).collect();
        assert!(check("f0", &many).unwrap_err().contains("files"));
    }

    #[test]
    fn a_directory_ships_without_hidden_entries_or_caches() {
        let dir = std::env::temp_dir().join(format!("rfx-ship-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("pkg/__pycache__")).unwrap();
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        std::fs::write(dir.join("main.py"), "import pkg\n").unwrap();
        std::fs::write(dir.join("pkg/__init__.py"), "").unwrap();
        std::fs::write(dir.join("pkg/__pycache__/x.pyc"), "").unwrap();
        std::fs::write(dir.join(".git/config"), "").unwrap();
        let LibrarySource::Python { module, files } = ship(&dir, Some("main")).unwrap() else {
            panic!("not a Python source");
        };
        assert_eq!(module, "main");
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["main.py", "pkg/__init__.py"]);
        assert!(ship(&dir, None).is_err());
        assert!(ship(&dir, Some("absent")).is_err());
        let LibrarySource::Python { module, .. } = ship(dir.join("main.py"), None).unwrap() else {
            panic!("not a Python source");
        };
        assert_eq!(module, "main");
        assert!(ship(dir.join("main.py"), Some("other")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
