//! L2: answers in files in one folder (an `emptyDir` in a pod), bounded by bytes, least
//! recently used evicted first, kept across restarts of the worker.
//!
//! Each file counts in whole 4 KiB blocks, so the bytes bound what the files take on disk.
//! One file per answer, named by its key: a header (`BLZR`, format version, expiry in Unix
//! seconds, SHA-256 of the answer) and the answer. A file is written under a temporary name
//! and renamed into place, so a reader never sees half of one; a file whose checksum does not
//! match (a torn write after a crash, a bad disk) is deleted, never served. The index of
//! keys, sizes and use order lives in memory: a miss costs no system call. At start the
//! folder is read, its files ordered by modification time (a hit touches its file, so the
//! order survives a restart), leftover temporary files deleted, and the oldest evicted while
//! over the bytes.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};

use super::Key;

const MAGIC: &[u8; 4] = b"BLZR";
const VERSION: u8 = 1;
/// Magic, version, expiry, checksum.
const HEADER: usize = 4 + 1 + 8 + 32;
#[cfg(test)]
pub(super) const HEADER_FOR_TESTS: usize = HEADER;
const SUFFIX: &str = ".entry";
/// Files are counted in whole blocks of this size, as a node's disk accounting sees them.
const BLOCK: u64 = 4096;

/// What a file of `len` bytes costs the level.
pub(super) fn cost(len: u64) -> u64 {
    len.div_ceil(BLOCK).max(1) * BLOCK
}

/// The disk level.
#[derive(Debug)]
pub struct Disk {
    dir: PathBuf,
    limit: u64,
    index: Mutex<Index>,
    temp: AtomicU64,
}

#[derive(Debug, Default)]
struct Index {
    files: HashMap<Key, (u64, u64)>,
    order: BTreeMap<u64, Key>,
    tick: u64,
    bytes: u64,
}

/// What a read found.
#[derive(Debug)]
pub enum Found {
    /// The answer, and when it expires.
    Hit(Bytes, SystemTime),
    Miss,
    /// A file that was unreadable or failed its checksum: deleted.
    Corrupt,
}

impl Disk {
    /// Opens (creating) the folder `dir` as a level of at most `limit` bytes.
    pub fn open(dir: &Path, limit: u64) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        fs::create_dir_all(dir)
            .with_context(|| format!("creating the response cache folder {}", dir.display()))?;
        let mut found = Vec::new();
        let entries = fs::read_dir(dir)
            .with_context(|| format!("reading the response cache folder {}", dir.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            match name.strip_suffix(SUFFIX).and_then(Key::from_hex) {
                Some(key) => {
                    let Ok(meta) = entry.metadata() else { continue };
                    found.push((meta.modified().unwrap_or(UNIX_EPOCH), key, cost(meta.len())));
                }
                // A write cut short by a crash, or something that is not ours.
                None if name.contains(".tmp.") => {
                    let _ = fs::remove_file(&path);
                }
                None => {}
            }
        }
        found.sort();
        let disk = Self {
            dir: dir.to_path_buf(),
            limit,
            index: Mutex::new(Index::default()),
            temp: AtomicU64::new(0),
        };
        let evicted = {
            let mut ix = disk.index.lock();
            for (_, key, size) in found {
                ix.insert(key, size);
            }
            disk.evict(&mut ix)
        };
        if evicted > 0 {
            tracing::info!(
                evicted,
                "response cache over its bytes at start: oldest answers dropped"
            );
        }
        Ok(disk)
    }

    /// Bytes and entries held.
    pub fn usage(&self) -> (u64, usize) {
        let ix = self.index.lock();
        (ix.bytes, ix.files.len())
    }

    fn path(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{}{SUFFIX}", key.hex()))
    }

    /// Whether an answer for `key` is on disk (as far as the index knows; no I/O).
    pub fn contains(&self, key: &Key) -> bool {
        self.index.lock().files.contains_key(key)
    }

    /// Reads the answer for `key` (blocking).
    pub fn get(&self, key: &Key, now: SystemTime) -> Found {
        if !self.contains(key) {
            return Found::Miss;
        }
        let path = self.path(key);
        let data = match fs::read(&path) {
            Ok(d) => d,
            // Evicted meanwhile.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.index.lock().remove(key);
                return Found::Miss;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "reading a cached answer failed");
                self.drop_file(key);
                return Found::Corrupt;
            }
        };
        let Some((expires, answer)) = parse(&data) else {
            tracing::warn!(path = %path.display(), "a cached answer failed its checksum: dropped");
            self.drop_file(key);
            return Found::Corrupt;
        };
        if expires <= now {
            self.drop_file(key);
            return Found::Miss;
        }
        {
            let mut ix = self.index.lock();
            ix.touch(key);
        }
        // The use order for the next start.
        if let Ok(f) = fs::File::options().write(true).open(&path) {
            let _ = f.set_modified(now);
        }
        Found::Hit(Bytes::copy_from_slice(answer), expires)
    }

    /// Writes `answer` for `key`, valid until `expires` (blocking); returns how many older
    /// answers were evicted to stay within the bytes. An answer larger than the whole level
    /// is not kept.
    pub fn put(&self, key: Key, answer: &[u8], expires: SystemTime) -> io::Result<usize> {
        let size = cost((HEADER + answer.len()) as u64);
        if size > self.limit {
            return Ok(0);
        }
        let secs = expires.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let n = self.temp.fetch_add(1, Ordering::Relaxed);
        let final_path = self.path(&key);
        let temp = self.dir.join(format!("{}.tmp.{}.{n}", key.hex(), std::process::id()));
        let written = (|| {
            let mut f = fs::File::create(&temp)?;
            f.write_all(MAGIC)?;
            f.write_all(&[VERSION])?;
            f.write_all(&secs.to_le_bytes())?;
            f.write_all(&Sha256::digest(answer))?;
            f.write_all(answer)?;
            fs::rename(&temp, &final_path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        let mut ix = self.index.lock();
        ix.remove(&key);
        ix.insert(key, size);
        Ok(self.evict(&mut ix))
    }

    /// Deletes the least recently used files until within the bytes.
    fn evict(&self, ix: &mut Index) -> usize {
        let mut evicted = 0;
        while ix.bytes > self.limit {
            let Some((_, oldest)) = ix.order.pop_first() else { break };
            if let Some((size, _)) = ix.files.remove(&oldest) {
                ix.bytes -= size;
            }
            let _ = fs::remove_file(self.path(&oldest));
            evicted += 1;
        }
        evicted
    }

    fn drop_file(&self, key: &Key) {
        self.index.lock().remove(key);
        let _ = fs::remove_file(self.path(key));
    }
}

/// The expiry and answer of a file's bytes, if its header and checksum hold.
fn parse(data: &[u8]) -> Option<(SystemTime, &[u8])> {
    if data.len() < HEADER || &data[..4] != MAGIC || data[4] != VERSION {
        return None;
    }
    let secs = u64::from_le_bytes(data[5..13].try_into().ok()?);
    let (sum, answer) = (&data[13..HEADER], &data[HEADER..]);
    if Sha256::digest(answer).as_slice() != sum {
        return None;
    }
    Some((UNIX_EPOCH + Duration::from_secs(secs), answer))
}

impl Index {
    fn insert(&mut self, key: Key, size: u64) {
        self.tick += 1;
        self.files.insert(key, (size, self.tick));
        self.order.insert(self.tick, key);
        self.bytes += size;
    }

    fn remove(&mut self, key: &Key) {
        if let Some((size, used)) = self.files.remove(key) {
            self.order.remove(&used);
            self.bytes -= size;
        }
    }

    fn touch(&mut self, key: &Key) {
        self.tick += 1;
        let tick = self.tick;
        if let Some((_, used)) = self.files.get_mut(key) {
            let old = std::mem::replace(used, tick);
            self.order.remove(&old);
            self.order.insert(tick, *key);
        }
    }
}
