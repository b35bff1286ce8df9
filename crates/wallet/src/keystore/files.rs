//! File-system helpers that keep key material private: directories 0700, files 0600.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::Rng;

use super::KeystoreError;

/// Keystore files are a few hundred bytes; anything far larger is not one.
pub(crate) const MAX_KEYSTORE_BYTES: u64 = 64 * 1024;

/// Creates `dir` (and missing parents) readable by the owner only.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), KeystoreError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| KeystoreError::io("create keystore directory", dir, e))
}

/// Atomically claims `path` as a new, empty, owner-only file. Fails with
/// [`io::ErrorKind::AlreadyExists`] if anything is already there, so nothing is overwritten.
pub(crate) fn create_private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    // The mode above is filtered through the umask; make it exactly 0600.
    #[cfg(unix)]
    if let Err(e) = fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)) {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(file)
}

/// Reads a file that should be a keystore, refusing implausibly large ones.
pub(crate) fn read_small(path: &Path) -> io::Result<Vec<u8>> {
    let len = fs::metadata(path)?.len();
    if len > MAX_KEYSTORE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is {len} bytes, far larger than any keystore file"),
        ));
    }
    fs::read(path)
}

/// A claimed file name that is deleted again unless [`Reservation::keep`] is called, so a
/// failed write leaves no empty or half-written account behind.
pub(crate) struct Reservation {
    path: PathBuf,
    kept: bool,
}

impl Reservation {
    /// Claims `path`, failing with [`io::ErrorKind::AlreadyExists`] if it is taken.
    pub(crate) fn claim(path: PathBuf) -> io::Result<(Self, File)> {
        let file = create_private_file(&path)?;
        Ok((Self { path, kept: false }, file))
    }

    pub(crate) fn keep(mut self) -> PathBuf {
        self.kept = true;
        std::mem::take(&mut self.path)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// An owner-only temporary file holding `contents`, removed when dropped.
pub(crate) struct TempFile {
    path: PathBuf,
}

impl TempFile {
    pub(crate) fn write(dir: &Path, contents: &[u8]) -> io::Result<Self> {
        let mut attempts = 0;
        loop {
            let suffix: u64 = rand::thread_rng().r#gen();
            let path = dir.join(format!(".openledger-keystore-{suffix:016x}.tmp"));
            match create_private_file(&path) {
                Ok(mut file) => {
                    let temp = Self { path };
                    file.write_all(contents)?;
                    file.sync_all()?;
                    return Ok(temp);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 8 => attempts += 1,
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_file_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        fs::write(&path, b"original").unwrap();
        let err = create_private_file(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"original");
    }

    #[cfg(unix)]
    #[test]
    fn private_dir_and_file_are_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("x/keystore");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let path = dir.join("f");
        create_private_file(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn dropped_reservation_removes_the_file_but_kept_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (r, _file) = Reservation::claim(dir.path().join("a")).unwrap();
        drop(r);
        assert!(!dir.path().join("a").exists());

        let (r, _file) = Reservation::claim(dir.path().join("b")).unwrap();
        assert_eq!(r.keep(), dir.path().join("b"));
        assert!(dir.path().join("b").exists());
    }

    #[test]
    fn failed_reservation_leaves_the_existing_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        fs::write(&path, b"theirs").unwrap();
        let err = Reservation::claim(path.clone()).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"theirs");
    }

    #[test]
    fn temp_file_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let temp = TempFile::write(dir.path(), b"x").unwrap();
        let path = temp.path().to_path_buf();
        assert_eq!(fs::read(&path).unwrap(), b"x");
        drop(temp);
        assert!(!path.exists());
    }

    #[test]
    fn oversized_files_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        fs::write(&path, vec![b' '; MAX_KEYSTORE_BYTES as usize + 1]).unwrap();
        assert_eq!(
            read_small(&path).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
