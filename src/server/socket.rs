//! The Unix socket: created with the configured mode, replacing a stale
//! socket file but nothing else, and removed when the server stops.

use std::{
    fs, io,
    os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
};

use tokio::net::UnixListener;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Something that is not a socket is in the way.
    #[error("{0}: exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// Another daemon answers on it.
    #[error("{0}: another process is serving on this socket")]
    InUse(PathBuf),
    /// A socket is there, and connecting to it failed other than with
    /// ECONNREFUSED (EACCES, say): it may be alive, so it is left alone.
    #[error(
        "{path}: a socket is there and connecting to it failed ({source}), so it may be in use; refusing to replace it (remove it if it is stale)"
    )]
    Undecided {
        /// The socket path.
        path: PathBuf,
        /// Why connecting failed.
        source: io::Error,
    },
    /// Any other failure.
    #[error("{path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
}

/// Removes the socket file when dropped, if it is still the one this
/// process bound (same device and inode): a socket another process put
/// there since is left alone.
pub struct SocketGuard {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if self.id.is_some() && file_id(&self.path) == self.id {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Device and inode of the file at `path` itself (not following links).
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Whatever is at `path` may be replaced: nothing, or a socket nobody
/// answers on (ECONNREFUSED). Anything else is refused.
fn check_existing(path: &Path) -> Result<(), SocketError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => Err(SocketError::InUse(path.to_owned())),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
                Err(source) => Err(SocketError::Undecided {
                    path: path.to_owned(),
                    source,
                }),
            }
        }
        Ok(_) => Err(SocketError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SocketError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Binds `path` with permission bits `mode`; the guard removes the file.
///
/// The socket is bound in a private directory beside `path` (mode 0700),
/// given its mode there, and renamed into place: it is never reachable with
/// the mode the umask gave it, and the rename replaces a stale socket in one
/// step. (Where that directory's path would be too long for a socket, it is
/// bound at `path` directly and its mode set right after.)
pub fn bind(path: &Path, mode: u32) -> Result<(UnixListener, SocketGuard), SocketError> {
    let io_err = |source| SocketError::Io {
        path: path.to_owned(),
        source,
    };
    check_existing(path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err)?;
    let private = dir.join(format!(".cb{}", std::process::id()));
    let staged = private.join("s");
    let listener = if staged.as_os_str().len() <= crate::config::MAX_SOCKET_PATH {
        let _ = fs::remove_dir_all(&private);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .map_err(io_err)?;
        let bound = UnixListener::bind(&staged).and_then(|l| {
            fs::set_permissions(&staged, fs::Permissions::from_mode(mode))?;
            fs::rename(&staged, path)?;
            Ok(l)
        });
        let _ = fs::remove_dir_all(&private);
        bound.map_err(io_err)?
    } else {
        if path.exists() {
            fs::remove_file(path).map_err(io_err)?;
        }
        let l = UnixListener::bind(path).map_err(io_err)?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err)?;
        l
    };
    let guard = SocketGuard {
        path: path.to_owned(),
        id: file_id(path),
    };
    Ok((listener, guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replaces_only_stale_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let first = bind(&path, 0o600).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(bind(&path, 0o600), Err(SocketError::InUse(_))));
        drop(first);
        assert!(!path.exists(), "the socket is removed on drop");
        // A socket nobody listens on is stale and replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let second = bind(&path, 0o660).unwrap();
        drop(second);
        assert!(!path.exists(), "the socket is removed on drop");

        let file = dir.path().join("regular");
        fs::write(&file, "keep me").unwrap();
        assert!(matches!(
            bind(&file, 0o600),
            Err(SocketError::NotASocket(_))
        ));
        assert_eq!(fs::read_to_string(&file).unwrap(), "keep me");
    }

    #[tokio::test]
    async fn the_guard_removes_only_its_own_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let (listener, guard) = bind(&path, 0o600).unwrap();
        // Someone else's socket takes the path (after ours was removed).
        drop(listener);
        fs::remove_file(&path).unwrap();
        let theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(guard);
        assert!(
            path.exists(),
            "the guard removed a socket it did not create"
        );
        drop(theirs);
        // No private staging directory is left behind.
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("s.sock")]);
    }
}
