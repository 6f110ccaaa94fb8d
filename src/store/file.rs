//! The `file` store: a JSON file whose keys are credential paths, or a
//! directory with one document per file (the shape of a Kubernetes secret
//! volume, where `path` is the secret's key).
//!
//! Changes are seen at once through inotify on the containing directory,
//! which also catches the `..data` symlink swap Kubernetes does on update
//! and editors that save by rename. The version of a document is a digest of
//! its bytes, so a re-read of an unchanged file is not a change.
//!
//! A single JSON file is parsed once for all the credentials it holds:
//! while the store is being watched, the parse is kept for at most a second
//! and only while the file's inode, size, mtime and ctime are unchanged and
//! no inotify event has been seen since, so a refresh of 10,000 credentials
//! reads and parses the file once instead of 10,000 times. Any change drops
//! the parse at once (and the allocator wipes it).

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use notify::{EventKind, RecursiveMode, Watcher};
use serde_json::Value;
use tokio::sync::watch;

use super::{Document, SecretStore, StoreError, cas, digest_version};
use crate::secret::SecretBytes;

/// How long one parse of a single-file store serves reads.
const PARSE_REUSE: Duration = Duration::from_secs(1);

/// What identifies one content of a file without reading it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    fn of(m: &fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// One parse of a single-file store.
struct Parsed {
    key: FileKey,
    generation: u64,
    at: Instant,
    object: serde_json::Map<String, Value>,
}

/// The parse shared by reads, and the count of changes seen by inotify.
#[derive(Default)]
struct ParseCache {
    parsed: Mutex<Option<Arc<Parsed>>>,
    generation: AtomicU64,
    /// Held through a parse, so reads that miss the cache together (every
    /// credential of the file at start, or after a change) wait for one
    /// parse instead of each making its own: 10,000 credentials in one
    /// file once made hundreds of concurrent parses of the whole file.
    parsing: Mutex<()>,
    /// Set while a task is waiting to drop the parse once it has served
    /// its [`PARSE_REUSE`].
    expiry_pending: AtomicBool,
}

impl ParseCache {
    /// Drops the parse once it is past [`PARSE_REUSE`]: it holds every
    /// document of the file (secrets included, and for 10,000 credentials
    /// several megabytes), which no read uses after that.
    fn expire_later(self: &Arc<Self>) {
        if self.expiry_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            let mut wait = PARSE_REUSE;
            loop {
                tokio::time::sleep(wait).await;
                cache.expiry_pending.store(false, Ordering::Release);
                let next = {
                    let mut slot = cache.parsed.lock().unwrap_or_else(|e| e.into_inner());
                    match slot
                        .as_ref()
                        .map(|p| PARSE_REUSE.saturating_sub(p.at.elapsed()))
                    {
                        Some(left) if left.is_zero() => {
                            drop(slot.take());
                            None
                        }
                        left => left,
                    }
                };
                match next {
                    // A newer parse: wait for its end, unless a newer
                    // task already does.
                    Some(left) if !cache.expiry_pending.swap(true, Ordering::AcqRel) => {
                        wait = left;
                    }
                    _ => return,
                }
            }
        });
    }

    /// A change was seen: forget the parse now, so its secrets are wiped.
    fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let old = self.parsed.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(old);
    }
}

/// How long a write waits for another process's lock on the store.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens `file` for reading only if it is a regular file: opened without
/// blocking (a FIFO put in its place would otherwise hang the read until
/// someone writes to it) and checked before a byte is read.
fn open_regular(file: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(file)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file; refusing to read it",
        ));
    }
    Ok(f)
}

/// The documents on disk, read and written on the blocking pool (a slow
/// disk or a FIFO must not stall the async workers).
struct Files {
    name: String,
    root: PathBuf,
    /// Set once inotify watches the store; the parse is reused only then.
    watching: AtomicBool,
    cache: Arc<ParseCache>,
    /// Bounds the blocking-pool threads this store's reads hold at once.
    reads: tokio::sync::Semaphore,
}

/// Blocking reads of one file store at a time: every credential re-reads
/// after a change, and each read takes a blocking-pool thread.
const CONCURRENT_READS: usize = 8;

/// A file or directory of documents.
pub struct FileStore {
    files: Arc<Files>,
    changes: Arc<watch::Sender<u64>>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    write_lock: tokio::sync::Mutex<()>,
    /// The paths of the last inotify event seen, relevant or not (tests
    /// wait on it to know the watcher has caught up).
    #[cfg(test)]
    last_event: Arc<Mutex<Vec<PathBuf>>>,
}

impl FileStore {
    /// A store over `root`. Watching starts on the first `changes()` call.
    pub fn new(name: &str, root: PathBuf) -> Self {
        Self {
            files: Arc::new(Files {
                name: name.to_owned(),
                root,
                watching: AtomicBool::new(false),
                cache: Arc::default(),
                reads: tokio::sync::Semaphore::new(CONCURRENT_READS),
            }),
            changes: Arc::new(watch::Sender::new(0)),
            watcher: Mutex::new(None),
            write_lock: tokio::sync::Mutex::new(()),
            #[cfg(test)]
            last_event: Arc::default(),
        }
    }
}

impl Files {
    /// The result of blocking work on `path`; a thread that panicked is an
    /// error of this store, not of the caller.
    async fn joined<T>(
        &self,
        path: &str,
        work: tokio::task::JoinHandle<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        work.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable {
                store: self.name.clone(),
                path: path.to_owned(),
                detail: "the file access stopped unexpectedly".into(),
            })
        })
    }

    fn io_error(&self, path: &str, file: &Path, source: io::Error) -> StoreError {
        let detail = format!(" (file {})", file.display());
        match source.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound {
                store: self.name.clone(),
                path: path.to_owned(),
                detail,
            },
            io::ErrorKind::PermissionDenied => StoreError::PermissionDenied {
                store: self.name.clone(),
                path: path.to_owned(),
                detail,
            },
            _ => StoreError::Io {
                store: self.name.clone(),
                path: path.to_owned(),
                source: io::Error::new(source.kind(), format!("{}: {source}", file.display())),
            },
        }
    }

    fn malformed(&self, path: &str, problem: String) -> StoreError {
        StoreError::Malformed {
            store: self.name.clone(),
            path: path.to_owned(),
            problem,
        }
    }

    /// The single file's top-level object: the shared parse when it is
    /// still current, else a fresh read. `fresh` skips the shared parse.
    fn parse_file(&self, path: &str, fresh: bool) -> Result<Arc<Parsed>, StoreError> {
        let reuse = !fresh && self.watching.load(Ordering::Acquire);
        let _parsing = reuse.then(|| self.cache.parsing.lock().unwrap_or_else(|e| e.into_inner()));
        let generation = self.cache.generation.load(Ordering::Acquire);
        if reuse && let Ok(meta) = fs::metadata(&self.root) {
            let key = FileKey::of(&meta);
            let slot = self.cache.parsed.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = slot.as_ref()
                && p.key == key
                && p.generation == generation
                && p.at.elapsed() < PARSE_REUSE
            {
                return Ok(Arc::clone(p));
            }
        }
        let io_error = |e| self.io_error(path, &self.root, e);
        let (key, whole) = {
            use std::io::Read;
            let mut file = open_regular(&self.root).map_err(io_error)?;
            // The key of the content actually read, not of a later rename.
            let key = FileKey::of(&file.metadata().map_err(io_error)?);
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(io_error)?;
            (key, SecretBytes::new(bytes))
        };
        let value: Value = serde_json::from_slice(whole.expose_secret()).map_err(|e| {
            self.malformed(
                path,
                format!(
                    "{} is not valid JSON (line {}, column {})",
                    self.root.display(),
                    e.line(),
                    e.column()
                ),
            )
        })?;
        let Value::Object(object) = value else {
            return Err(self.malformed(
                path,
                format!(
                    "{} must hold a JSON object keyed by credential path",
                    self.root.display()
                ),
            ));
        };
        let parsed = Arc::new(Parsed {
            key,
            generation,
            at: Instant::now(),
            object,
        });
        // Kept only when no change was seen while reading.
        if reuse && self.cache.generation.load(Ordering::Acquire) == generation {
            let old = self
                .cache
                .parsed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .replace(Arc::clone(&parsed));
            drop(old);
        }
        Ok(parsed)
    }

    fn read_blocking(&self, path: &str, fresh: bool) -> Result<Document, StoreError> {
        let bytes = if self.root.is_dir() {
            let file = self.root.join(path);
            let bytes = open_regular(&file)
                .and_then(|mut f| {
                    use std::io::Read;
                    let mut bytes = Vec::new();
                    f.read_to_end(&mut bytes).map(|_| bytes)
                })
                .map_err(|e| self.io_error(path, &file, e))?;
            SecretBytes::new(bytes)
        } else {
            let parsed = self.parse_file(path, fresh)?;
            let doc = parsed
                .object
                .get(path)
                .ok_or_else(|| StoreError::NotFound {
                    store: self.name.clone(),
                    path: path.to_owned(),
                    detail: format!(" (no such key in {})", self.root.display()),
                })?;
            SecretBytes::new(serde_json::to_vec(doc).expect("a JSON value serializes"))
        };
        let version = digest_version(bytes.expose_secret());
        Ok(Document { bytes, version })
    }

    /// The file `path`'s document lives in, and the lock file beside it.
    fn target_and_lock(&self, path: &str) -> (PathBuf, PathBuf) {
        if self.root.is_dir() {
            (
                self.root.join(path),
                self.root.join(format!(".{path}.lock")),
            )
        } else {
            let parent = self.root.parent().unwrap_or(Path::new("."));
            let file_name = self.root.file_name().unwrap_or_default().to_string_lossy();
            (self.root.clone(), parent.join(format!(".{file_name}.lock")))
        }
    }

    fn write_blocking(
        &self,
        path: &str,
        document: &SecretBytes,
        expected: Option<&str>,
    ) -> Result<String, StoreError> {
        let (target, _) = self.target_and_lock(path);

        let current = cas::version_of(self.read_blocking(path, true))?;
        cas::check(&self.name, path, current.as_deref(), expected)?;
        let bytes = if self.root.is_dir() {
            SecretBytes::new(document.expose_secret().to_vec())
        } else {
            let mut whole: Value = match fs::read(&self.root) {
                Ok(b) => serde_json::from_slice(SecretBytes::new(b).expose_secret())
                    .map_err(|_| self.malformed(path, "the store file is not valid JSON".into()))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => Value::Object(Default::default()),
                Err(e) => return Err(self.io_error(path, &self.root, e)),
            };
            let doc: Value = serde_json::from_slice(document.expose_secret())
                .map_err(|_| self.malformed(path, "the new document is not valid JSON".into()))?;
            whole
                .as_object_mut()
                .ok_or_else(|| self.malformed(path, "the store file is not a JSON object".into()))?
                .insert(path.to_owned(), doc);
            SecretBytes::new(serde_json::to_vec_pretty(&whole).expect("a JSON value serializes"))
        };
        // A name nobody can guess or prepare: created here (O_EXCL), never
        // through a link.
        let tmp = target.with_file_name(format!(
            ".{}.{}.tmp",
            target.file_name().unwrap_or_default().to_string_lossy(),
            uuid::Uuid::new_v4().simple()
        ));
        let result = (|| {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            // Owner-only until the target's own mode is copied over: a new
            // document must not be readable by others, even for a moment.
            let mut f = fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            let mode = fs::metadata(&target).map(|m| m.permissions()).ok();
            if let Some(mode) = mode {
                f.set_permissions(mode)?;
            }
            f.write_all(bytes.expose_secret())?;
            f.sync_all()?;
            fs::rename(&tmp, &target)
        })();
        // Whatever happened, the shared parse may no longer be the file.
        self.cache.invalidate();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(self.io_error(path, &target, e));
        }
        Ok(digest_version(document.expose_secret()))
    }
}

impl FileStore {
    /// Cross-process exclusion (the daemon and `credbroker rotate`): an
    /// advisory lock on a file beside the data, which survives the rename.
    /// The lock file is created 0600 and never followed through a link; a
    /// lock another process holds for [`LOCK_TIMEOUT`] fails the write.
    async fn lock(&self, path: &str) -> Result<fs::File, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let (_, lock_path) = self.files.target_and_lock(path);
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|e| self.files.io_error(path, &lock_path, e))?;
        let deadline = tokio::time::Instant::now() + LOCK_TIMEOUT;
        loop {
            match lock.try_lock() {
                Ok(()) => return Ok(lock),
                Err(fs::TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(StoreError::Unavailable {
                        store: self.files.name.clone(),
                        path: path.to_owned(),
                        detail: format!(
                            "{} is locked by another process (held for over {}s)",
                            lock_path.display(),
                            LOCK_TIMEOUT.as_secs()
                        ),
                    });
                }
                Err(fs::TryLockError::Error(e)) => {
                    return Err(self.files.io_error(path, &lock_path, e));
                }
            }
        }
    }

    fn start_watching(&self) -> notify::Result<notify::RecommendedWatcher> {
        let dir = if self.files.root.is_dir() {
            self.files.root.clone()
        } else {
            match self.files.root.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                _ => PathBuf::from("."),
            }
        };
        let changes = Arc::clone(&self.changes);
        let cache = Arc::clone(&self.files.cache);
        // A single file: only events on it, or on Kubernetes' `..data`
        // links and timestamped directories, are changes; other files in
        // the directory (logs, say) are not.
        let only =
            (!self.files.root.is_dir()).then(|| self.files.root.file_name().map(|n| n.to_owned()));
        let relevant = move |e: &notify::Event| {
            if e.need_rescan() || e.paths.is_empty() {
                return true;
            }
            e.paths.iter().any(|p| {
                let Some(name) = p.file_name() else {
                    return true;
                };
                let text = name.to_string_lossy();
                // Our own lock files beside the data.
                if text.starts_with('.') && text.ends_with(".lock") && !text.starts_with("..") {
                    return false;
                }
                match &only {
                    Some(file) => Some(name) == file.as_deref() || text.starts_with(".."),
                    None => true,
                }
            })
        };
        #[cfg(test)]
        let last_event = Arc::clone(&self.last_event);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                #[cfg(test)]
                if let Ok(e) = &event {
                    *last_event.lock().unwrap() = e.paths.clone();
                }
                match event {
                    // Our own reads open and close files: not a change.
                    Ok(e) if matches!(e.kind, EventKind::Access(_)) => {}
                    Ok(e) if !relevant(&e) => {}
                    _ => {
                        cache.invalidate();
                        changes.send_modify(|n| *n = n.wrapping_add(1));
                    }
                }
            })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    }
}

#[async_trait]
impl SecretStore for FileStore {
    fn name(&self) -> &str {
        &self.files.name
    }

    async fn read(&self, path: &str) -> Result<Document, StoreError> {
        // Never closed, so the permit always comes.
        let _permit = self.files.reads.acquire().await;
        let files = Arc::clone(&self.files);
        let owned = path.to_owned();
        let read = self
            .files
            .joined(
                path,
                tokio::task::spawn_blocking(move || files.read_blocking(&owned, false)),
            )
            .await;
        self.files.cache.expire_later();
        read
    }

    async fn write(
        &self,
        path: &str,
        document: SecretBytes,
        expected_version: Option<&str>,
    ) -> Result<String, StoreError> {
        let _guard = self.write_lock.lock().await;
        // Held until the blocking write below has finished.
        let _lock = self.lock(path).await?;
        let files = Arc::clone(&self.files);
        let (owned, expected) = (path.to_owned(), expected_version.map(str::to_owned));
        self.files
            .joined(
                path,
                tokio::task::spawn_blocking(move || {
                    files.write_blocking(&owned, &document, expected.as_deref())
                }),
            )
            .await
    }

    fn forget_cached_reads(&self) {
        let old = self
            .files
            .cache
            .parsed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(old);
    }

    fn changes(&self) -> Option<watch::Receiver<u64>> {
        let mut slot = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            match self.start_watching() {
                Ok(w) => {
                    *slot = Some(w);
                    self.files.watching.store(true, Ordering::Release);
                }
                Err(e) => {
                    tracing::warn!(
                        store = %self.files.name,
                        path = %self.files.root.display(),
                        error = %e,
                        "cannot watch the file store for changes; relying on refresh_interval and SIGHUP"
                    );
                    return None;
                }
            }
        }
        Some(self.changes.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"account_sid":"AC0123456789abcdef0123456789abcdef","auth_token":"0123456789abcdef0123456789abcdef"}"#;

    #[tokio::test]
    async fn reads_file_and_directory_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.json");
        fs::write(&file, format!(r#"{{"twilio/a": {DOC}}}"#)).unwrap();
        let store = FileStore::new("local", file.clone());
        let doc = store.read("twilio/a").await.unwrap();
        assert_eq!(doc.version, digest_version(doc.bytes.expose_secret()));
        assert!(matches!(
            store.read("twilio/b").await,
            Err(StoreError::NotFound { .. })
        ));

        let vol = dir.path().join("vol");
        fs::create_dir(&vol).unwrap();
        fs::write(vol.join("verify"), DOC).unwrap();
        let store = FileStore::new("vol", vol);
        let doc = store.read("verify").await.unwrap();
        assert_eq!(doc.bytes.expose_secret(), DOC.as_bytes());
    }

    #[tokio::test]
    async fn one_parse_serves_many_reads_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.json");
        let other = DOC.replace("0123456789abcdef\"}", "fedcba9876543210\"}");
        fs::write(&file, format!(r#"{{"a": {DOC}, "b": {DOC}}}"#)).unwrap();
        let store = FileStore::new("local", file.clone());
        // Not watched (the `rotate` command): every read parses.
        let p1 = store.files.parse_file("a", false).unwrap();
        assert!(!Arc::ptr_eq(
            &p1,
            &store.files.parse_file("a", false).unwrap()
        ));

        let mut changes = store.changes().expect("inotify works here");
        let p1 = store.files.parse_file("a", false).unwrap();
        assert!(Arc::ptr_eq(
            &p1,
            &store.files.parse_file("b", false).unwrap()
        ));
        assert!(!Arc::ptr_eq(
            &p1,
            &store.files.parse_file("b", true).unwrap()
        ));

        // Rewritten in place, same size: the parse is dropped on the event
        // (once all the events of one write are in), and the next read sees
        // the new content.
        fs::write(&file, format!(r#"{{"a": {other}, "b": {DOC}}}"#)).unwrap();
        changes.changed().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            store.files.cache.parsed.lock().unwrap().is_none(),
            "dropped on the event"
        );
        let a = store.read("a").await.unwrap();
        assert_eq!(a.bytes.expose_secret(), other.as_bytes());
        let p2 = store.files.parse_file("a", false).unwrap();
        assert!(!Arc::ptr_eq(&p1, &p2));
        assert_eq!(
            store.read("b").await.unwrap().bytes.expose_secret(),
            DOC.as_bytes()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_parse_goes_when_told_or_after_its_second() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.json");
        fs::write(&file, format!(r#"{{"a": {DOC}}}"#)).unwrap();
        let store = FileStore::new("local", file.clone());
        let _changes = store.changes().expect("inotify works here");
        let held = || store.files.cache.parsed.lock().unwrap().is_some();
        store.read("a").await.unwrap();
        assert!(held(), "kept for the reads that follow");
        store.forget_cached_reads();
        assert!(!held(), "forgotten when the broker says the burst is over");

        // Left alone, it goes once PARSE_REUSE has passed (the expiry task
        // measures with the real clock, so the wait is real, and short).
        store.read("a").await.unwrap();
        assert!(held());
        tokio::time::resume();
        for _ in 0..100 {
            if !held() {
                return;
            }
            tokio::time::sleep(PARSE_REUSE / 10).await;
        }
        panic!("the parse outlived PARSE_REUSE several times over");
    }

    #[tokio::test]
    async fn other_files_in_the_directory_are_not_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.json");
        fs::write(&file, format!(r#"{{"a": {DOC}}}"#)).unwrap();
        let store = FileStore::new("local", file.clone());
        let mut changes = store.changes().unwrap();
        changes.borrow_and_update();
        fs::write(dir.path().join("daemon.log"), "a log line\n").unwrap();
        fs::write(dir.path().join(".secrets.json.lock"), "").unwrap();
        // A change of the file itself, after them: the first change seen.
        fs::write(&file, format!(r#"{{"b": {DOC}}}"#)).unwrap();
        changes.changed().await.unwrap();
        store.read("b").await.unwrap();
        let seen = *changes.borrow_and_update();
        fs::write(dir.path().join("daemon.log"), "another\n").unwrap();
        // A marker written after the log line: once the watcher has seen
        // its event, it has seen the log line's (inotify keeps order).
        let marker = dir.path().join("marker.txt");
        fs::write(&marker, "x").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !store.last_event.lock().unwrap().contains(&marker) {
            assert!(
                std::time::Instant::now() < deadline,
                "no event for the marker"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            *changes.borrow(),
            seen,
            "a log write was taken for a change"
        );
    }

    #[tokio::test]
    async fn malformed_file_names_the_file_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.json");
        fs::write(&file, r#"{"a": {"auth_token": "deadbeef"#).unwrap();
        let e = FileStore::new("local", file).read("a").await.unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("secrets.json") && msg.contains("not valid JSON"),
            "{msg}"
        );
        assert!(!msg.contains("deadbeef"));
        assert!(!e.is_transient());
    }

    #[tokio::test]
    async fn compare_and_set_write() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.json");
        fs::write(&file, format!(r#"{{"a": {DOC}, "other": 1}}"#)).unwrap();
        let store = FileStore::new("local", file.clone());
        let v1 = store.read("a").await.unwrap().version;
        let new = SecretBytes::new(
            DOC.replace("0123456789abcdef\"}", "fedcba9876543210\"}")
                .into_bytes(),
        );
        let v2 = store.write("a", new.clone(), Some(&v1)).await.unwrap();
        assert_ne!(v1, v2);
        assert_eq!(store.read("a").await.unwrap().version, v2);
        // The stale writer loses.
        assert!(matches!(
            store.write("a", new.clone(), Some(&v1)).await,
            Err(StoreError::Conflict { .. })
        ));
        // Other keys survive.
        let whole: Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        assert_eq!(whole["other"], 1);
        // Creating requires that nothing is there.
        store.write("b", new.clone(), None).await.unwrap();
        match store.write("b", new.clone(), None).await {
            Err(StoreError::Conflict { path, .. }) => assert_eq!(path, "b"),
            other => panic!("a create over an existing document: {other:?}"),
        }

        // A new document in a directory store is readable by its owner only.
        use std::os::unix::fs::PermissionsExt;
        let vol = dir.path().join("vol");
        fs::create_dir(&vol).unwrap();
        let store = FileStore::new("vol", vol.clone());
        store.write("fresh", new, None).await.unwrap();
        let mode = fs::metadata(vol.join("fresh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn a_fifo_in_place_of_the_store_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.json");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&file)
                .status()
                .unwrap()
                .success()
        );
        let store = FileStore::new("local", file.clone());
        let read = tokio::time::timeout(Duration::from_secs(2), store.read("a"))
            .await
            .expect("a read of a FIFO must not block");
        let e = read.unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        // A directory store: the same for a document that is a FIFO.
        let docs = dir.path().join("docs");
        fs::create_dir(&docs).unwrap();
        std::process::Command::new("mkfifo")
            .arg(docs.join("a"))
            .status()
            .unwrap();
        let store = FileStore::new("local", docs);
        let read = tokio::time::timeout(Duration::from_secs(2), store.read("a"))
            .await
            .expect("a read of a FIFO must not block");
        assert!(read.unwrap_err().to_string().contains("not a regular file"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_lock_fails_the_write_after_the_timeout() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.json");
        fs::write(&file, format!(r#"{{"a": {DOC}}}"#)).unwrap();
        let store = FileStore::new("local", file.clone());
        let v1 = store.read("a").await.unwrap().version;
        let new = SecretBytes::new(DOC.as_bytes().to_vec());
        store.write("a", new.clone(), Some(&v1)).await.unwrap();
        let lock_path = dir.path().join(".secrets.json.lock");
        assert_eq!(
            fs::metadata(&lock_path).unwrap().permissions().mode() & 0o777,
            0o600,
            "the lock file is owner-only"
        );
        // Another holder (a second open file description) keeps the lock.
        let held = fs::OpenOptions::new().write(true).open(&lock_path).unwrap();
        held.lock().unwrap();
        let v2 = store.read("a").await.unwrap().version;
        let started = tokio::time::Instant::now();
        let e = store.write("a", new, Some(&v2)).await.unwrap_err();
        assert!(
            e.to_string().contains("is locked by another process"),
            "{e}"
        );
        assert!(started.elapsed() >= LOCK_TIMEOUT);
        // No temporary file is left behind.
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
