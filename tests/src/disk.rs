//! A simulated disk under the test brokers' redb files: it keeps what was synced apart from what
//! was only written, so a simulated power loss can reopen a database with the synced image plus
//! a random prefix of the writes since (the first one left out torn at a 4 KiB page boundary),
//! and it can make fsync fail. The nemesis and the crash tests use it on real broker processes;
//! the `weir` binary never does (see `weir_storage::install_database_backend`).
//!
//! The database file holds what was synced. Writes since the last sync are kept in memory (for
//! reads) and appended to a journal beside the file, `FILE.unsynced`, which outlives the process
//! as the kernel's page cache would: a process killed with SIGKILL lost nothing, so when the
//! database is opened again the whole journal is applied. A power loss is a SIGKILL followed by
//! [`mark_power_loss`]: the next open applies only a prefix of the journal, chosen from the
//! seed the mark holds. While a file `FILE.fail-fsync` exists, every sync fails with EIO.
//!
//! A process opts in with [`install_from_env`]: `WEIR_SIMULATED_DISK=honest` simulates a disk
//! that keeps what it synced; `=lying` one that acknowledges a sync before the data is durable
//! (a broker built to acknowledge before fsync), so a power loss loses acknowledged writes:
//! everything since its last real sync.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rand::{Rng, SeedableRng};
use redb::backends::FileBackend;
use redb::{BackendError, Builder, Database, DatabaseError, StorageBackend};

/// The environment variable that makes a test broker store its databases on a simulated disk.
pub const ENV: &str = "WEIR_SIMULATED_DISK";

/// The unit a disk writes atomically: a power loss may tear a write between pages, never
/// inside one.
pub const PAGE: u64 = 4096;

/// The redb files a broker keeps in its data directory.
pub const DATABASES: [&str; 2] = ["partitions.redb", "controller.redb"];

/// How a lying disk goes: one sync in this many reaches the file.
const LYING_SYNC_EVERY: u64 = 16;

/// What a simulated disk does with a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskMode {
    /// A sync makes every write before it durable.
    Honest,
    /// A sync returns at once; only every 16th one makes the writes before it durable.
    Lying,
}

impl DiskMode {
    /// The value of [`ENV`] that selects this mode.
    pub fn as_env(self) -> &'static str {
        match self {
            DiskMode::Honest => "honest",
            DiskMode::Lying => "lying",
        }
    }
}

/// If [`ENV`] is set, makes every log database this process opens live on a simulated disk of
/// that mode. Test broker binaries call it before anything else; an unknown value is an error.
pub fn install_from_env() -> Result<(), String> {
    let mode = match std::env::var(ENV).as_deref() {
        Err(_) => return Ok(()),
        Ok("honest") => DiskMode::Honest,
        Ok("lying") => DiskMode::Lying,
        Ok(other) => return Err(format!("{ENV}={other:?}: expected honest or lying")),
    };
    let create: weir_storage::CreateDatabase = match mode {
        DiskMode::Honest => |builder, path| create(builder, path, DiskMode::Honest),
        DiskMode::Lying => |builder, path| create(builder, path, DiskMode::Lying),
    };
    weir_storage::install_database_backend(create);
    Ok(())
}

fn create(builder: &Builder, path: &Path, mode: DiskMode) -> Result<Database, DatabaseError> {
    builder.create_with_backend(SimulatedDisk::open(path, mode)?)
}

/// Marks the database at `path` (whose process must be dead) as having lost power: the next
/// open keeps only a prefix of its unsynced writes, chosen from `seed`.
pub fn mark_power_loss(path: &Path, seed: u64) -> io::Result<()> {
    std::fs::write(side_file(path, "power-loss"), seed.to_string())
}

/// Marks every database of a broker's data directory as having lost power ([`mark_power_loss`]).
pub fn mark_power_loss_in(data_dir: &Path, seed: u64) -> io::Result<()> {
    for (i, name) in DATABASES.iter().enumerate() {
        mark_power_loss(&data_dir.join(name), seed.wrapping_add(i as u64))?;
    }
    Ok(())
}

/// Makes every sync of the databases in `data_dir` fail (`true`) or work again (`false`).
pub fn set_fsync_failing(data_dir: &Path, failing: bool) -> io::Result<()> {
    for name in DATABASES {
        let trigger = side_file(&data_dir.join(name), "fail-fsync");
        if failing {
            std::fs::write(&trigger, b"")?;
        } else if let Err(e) = std::fs::remove_file(&trigger)
            && e.kind() != io::ErrorKind::NotFound
        {
            return Err(e);
        }
    }
    Ok(())
}

fn side_file(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// One write a journal holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Record {
    Write {
        offset: u64,
        data: Vec<u8>,
    },
    SetLen(u64),
    /// Everything before was synced (written just before the journal is emptied).
    Synced,
}

const WRITE: u8 = 1;
const SET_LEN: u8 = 2;
const SYNCED: u8 = 3;

impl Record {
    fn encode(&self) -> Vec<u8> {
        let (tag, value, data): (u8, u64, &[u8]) = match self {
            Record::Write { offset, data } => (WRITE, *offset, data),
            Record::SetLen(len) => (SET_LEN, *len, &[]),
            Record::Synced => (SYNCED, 0, &[]),
        };
        let mut out = Vec::with_capacity(13 + data.len());
        out.push(tag);
        out.extend_from_slice(&value.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        out
    }

    /// The complete records of a journal; a record cut short (the process died inside the
    /// write that appended it, so it never returned to redb) ends it.
    fn decode_all(mut bytes: &[u8]) -> Vec<Record> {
        let mut out = Vec::new();
        while bytes.len() >= 13 {
            let value = u64::from_le_bytes(bytes[1..9].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(bytes[9..13].try_into().expect("4 bytes")) as usize;
            let Some(data) = bytes.get(13..13 + len) else {
                break;
            };
            out.push(match bytes[0] {
                WRITE => Record::Write {
                    offset: value,
                    data: data.to_vec(),
                },
                SET_LEN => Record::SetLen(value),
                SYNCED => Record::Synced,
                _ => break,
            });
            bytes = &bytes[13 + len..];
        }
        out
    }
}

/// A redb storage backend over one file, with unsynced writes held apart (module docs).
#[derive(Debug)]
pub struct SimulatedDisk {
    /// redb's own backend over the same file, for its locks.
    locks: FileBackend,
    /// The file: what was synced.
    file: File,
    fail_fsync: PathBuf,
    mode: DiskMode,
    state: Mutex<State>,
    /// Set, the process is taken to have died: nothing more reaches the file or the journal.
    dead: Arc<AtomicBool>,
}

#[derive(Debug)]
struct State {
    journal: File,
    /// Pages written since the last sync.
    pages: HashMap<u64, Box<[u8]>>,
    /// The length redb sees.
    len: u64,
    /// The file's bytes from here on read as zeros (the length was cut since the last sync).
    file_valid: u64,
    syncs: u64,
}

impl SimulatedDisk {
    /// Opens the file at `path`: first brings it to what the disk holds after the process that
    /// last had it died (its whole journal, or after a power loss a prefix of it).
    pub fn open(path: &Path, mode: DiskMode) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let journal_path = side_file(path, "unsynced");
        recover(path, &file, &journal_path, mode)?;
        let journal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&journal_path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            locks: FileBackend::new(file.try_clone()?).map_err(io::Error::other)?,
            file,
            fail_fsync: side_file(path, "fail-fsync"),
            mode,
            state: Mutex::new(State {
                journal,
                pages: HashMap::new(),
                len,
                file_valid: len,
                syncs: 0,
            }),
            dead: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A switch that, set, makes this disk behave as if its process had died: later writes
    /// and syncs fail and reach nothing. For tests that die in-process.
    pub fn death_switch(&self) -> Arc<AtomicBool> {
        self.dead.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state, to change; fails once the process is taken to have died.
    fn state_to_write(&self) -> io::Result<std::sync::MutexGuard<'_, State>> {
        if self.dead.load(Ordering::Acquire) {
            return Err(io::Error::other("simulated disk: its process died"));
        }
        Ok(self.state())
    }

    /// Page `page` as the file holds it (zeros past what is valid).
    fn file_page(&self, state: &State, page: u64) -> io::Result<Box<[u8]>> {
        let mut buf = vec![0u8; PAGE as usize].into_boxed_slice();
        let start = page * PAGE;
        let valid = state.file_valid.saturating_sub(start).min(PAGE) as usize;
        if valid > 0 {
            let on_file = self.file.metadata()?.len().saturating_sub(start).min(PAGE) as usize;
            let n = valid.min(on_file);
            self.file.read_exact_at(&mut buf[..n], start)?;
        }
        Ok(buf)
    }

    /// Writes what was written since the last sync to the file and syncs it.
    fn flush(&self, state: &mut State) -> io::Result<()> {
        if state.file_valid < self.file.metadata()?.len() {
            self.file.set_len(state.file_valid)?;
        }
        self.file.set_len(state.len)?;
        for (&page, bytes) in &state.pages {
            let start = page * PAGE;
            if start < state.len {
                let n = (state.len - start).min(PAGE) as usize;
                self.file.write_all_at(&bytes[..n], start)?;
            }
        }
        self.file.sync_data()?;
        state.journal.write_all(&Record::Synced.encode())?;
        state.journal.set_len(0)?;
        state.pages.clear();
        state.file_valid = state.len;
        Ok(())
    }
}

/// Applies the journal the last process left beside `path`: all of it, or after a power loss a
/// prefix (the next write torn at a page boundary). Then syncs the file and empties the journal.
///
/// A lying disk loses everything since its last real sync: redb reuses the pages of commits it
/// believes synced, so a prefix of what followed could leave a file no real disk would (an old
/// commit whose pages were overwritten), while the image of a real sync is a database redb
/// opens, just without the acknowledged commits since.
fn recover(path: &Path, file: &File, journal_path: &Path, mode: DiskMode) -> io::Result<()> {
    let mut bytes = Vec::new();
    match File::open(journal_path) {
        Ok(mut journal) => {
            journal.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut records = Record::decode_all(&bytes);
    if let Some(last_sync) = records.iter().rposition(|r| *r == Record::Synced) {
        records.drain(..=last_sync);
    }
    let mark = side_file(path, "power-loss");
    let seed = match std::fs::read_to_string(&mark) {
        Ok(seed) => Some(seed.trim().parse::<u64>().map_err(io::Error::other)?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let (kept, torn) = match seed {
        None => (records.len(), None),
        Some(_) if mode == DiskMode::Lying => (0, None),
        Some(seed) => {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let kept = rng.random_range(0..=records.len());
            // The first write left out may have reached the disk in part, whole pages of it.
            let torn = match records.get(kept) {
                Some(Record::Write { offset, data }) => {
                    let pages = pages_spanned(*offset, data.len());
                    Some((kept, rng.random_range(0..pages)))
                }
                _ => None,
            };
            (kept, torn)
        }
    };
    for record in &records[..kept] {
        apply(file, record, None)?;
    }
    if let Some((index, pages)) = torn {
        apply(file, &records[index], Some(pages))?;
    }
    if seed.is_some() || !records.is_empty() {
        tracing::warn!(
            file = %path.display(),
            power_loss = seed.is_some(),
            kept,
            unsynced = records.len(),
            torn_pages_kept = torn.map(|(_, pages)| pages),
            "simulated disk: reopened after the process died"
        );
    }
    file.sync_data()?;
    if seed.is_some() {
        std::fs::remove_file(&mark)?;
    }
    match std::fs::remove_file(journal_path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The part of a read or write that falls in one page.
struct PageSpan {
    page: u64,
    /// Where it starts in the page.
    offset_in_page: usize,
    /// Where it starts in the caller's buffer.
    at: usize,
    len: usize,
}

impl PageSpan {
    /// Its bytes within the page.
    fn within(&self) -> std::ops::Range<usize> {
        self.offset_in_page..self.offset_in_page + self.len
    }
}

/// The bytes `offset..offset + len`, page by page.
fn page_spans(offset: u64, len: usize) -> impl Iterator<Item = PageSpan> {
    let mut at = 0;
    std::iter::from_fn(move || {
        (at < len).then(|| {
            let position = offset + at as u64;
            let offset_in_page = (position % PAGE) as usize;
            let span = PageSpan {
                page: position / PAGE,
                offset_in_page,
                at,
                len: (PAGE as usize - offset_in_page).min(len - at),
            };
            at += span.len;
            span
        })
    })
}

/// How many pages (aligned at multiples of [`PAGE`]) the bytes `offset..offset + len` touch.
fn pages_spanned(offset: u64, len: usize) -> u64 {
    if len == 0 {
        return 1;
    }
    (offset + len as u64 - 1) / PAGE - offset / PAGE + 1
}

/// Applies one journal record to the file; with `pages`, only the write's first that many pages.
fn apply(file: &File, record: &Record, pages: Option<u64>) -> io::Result<()> {
    match record {
        Record::Write { offset, data } => {
            let end = match pages {
                None => data.len(),
                Some(pages) => {
                    let boundary = (offset / PAGE + pages) * PAGE;
                    (boundary.saturating_sub(*offset) as usize).min(data.len())
                }
            };
            if end > 0 {
                let needed = offset + end as u64;
                if file.metadata()?.len() < needed {
                    file.set_len(needed)?;
                }
                file.write_all_at(&data[..end], *offset)?;
            }
        }
        Record::SetLen(len) => file.set_len(*len)?,
        Record::Synced => {}
    }
    Ok(())
}

impl StorageBackend for SimulatedDisk {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.state().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let state = self.state();
        if offset + out.len() as u64 > state.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at {offset} past the end ({})",
                    out.len(),
                    state.len
                ),
            ));
        }
        for span in page_spans(offset, out.len()) {
            let to = &mut out[span.at..span.at + span.len];
            match state.pages.get(&span.page) {
                Some(bytes) => to.copy_from_slice(&bytes[span.within()]),
                None => to.copy_from_slice(&self.file_page(&state, span.page)?[span.within()]),
            }
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut state = self.state_to_write()?;
        state.journal.write_all(&Record::SetLen(len).encode())?;
        if len < state.len {
            state.file_valid = state.file_valid.min(len);
            state.pages.retain(|&page, _| page * PAGE < len);
            if let Some(bytes) = state.pages.get_mut(&(len / PAGE)) {
                bytes[(len % PAGE) as usize..].fill(0);
            }
        }
        state.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut state = self.state_to_write()?;
        if self.fail_fsync.exists() {
            return Err(io::Error::other(format!(
                "simulated fsync failure ({} exists)",
                self.fail_fsync.display()
            )));
        }
        state.syncs += 1;
        if self.mode == DiskMode::Lying && !state.syncs.is_multiple_of(LYING_SYNC_EVERY) {
            return Ok(());
        }
        self.flush(&mut state)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut state = self.state_to_write()?;
        state.journal.write_all(
            &Record::Write {
                offset,
                data: data.to_vec(),
            }
            .encode(),
        )?;
        for span in page_spans(offset, data.len()) {
            if !state.pages.contains_key(&span.page) {
                let bytes = self.file_page(&state, span.page)?;
                state.pages.insert(span.page, bytes);
            }
            let bytes = state.pages.get_mut(&span.page).expect("inserted above");
            bytes[span.within()].copy_from_slice(&data[span.at..span.at + span.len]);
        }
        state.len = state.len.max(offset + data.len() as u64);
        Ok(())
    }

    fn close(&self) -> Result<(), io::Error> {
        self.locks.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.locks.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.locks.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.locks.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.locks.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.locks.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.locks.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};

    use super::*;

    const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("t");

    fn open(path: &Path, mode: DiskMode) -> Database {
        open_with_switch(path, mode).0
    }

    fn open_with_switch(path: &Path, mode: DiskMode) -> (Database, Arc<AtomicBool>) {
        let disk = SimulatedDisk::open(path, mode).expect("disk");
        let dead = disk.death_switch();
        let db = Database::builder()
            .create_with_backend(disk)
            .expect("database");
        (db, dead)
    }

    fn commit(db: &Database, key: u64) {
        let txn = db.begin_write().expect("begin");
        {
            let mut table = txn.open_table(TABLE).expect("table");
            table
                .insert(key, vec![key as u8; 3000].as_slice())
                .expect("insert");
        }
        txn.commit().expect("commit");
    }

    fn keys(path: &Path) -> Vec<u64> {
        let db = open(path, DiskMode::Honest);
        let txn = db.begin_read().expect("read");
        let Ok(table) = txn.open_table(TABLE) else {
            return Vec::new();
        };
        let mut keys = Vec::new();
        for item in table.iter().expect("iter") {
            let (k, v) = item.expect("item");
            assert_eq!(v.value(), vec![k.value() as u8; 3000].as_slice(), "value");
            keys.push(k.value());
        }
        keys
    }

    /// Commits 0..n; then the process dies.
    fn write_and_die(path: &Path, mode: DiskMode, n: u64) {
        let (db, dead) = open_with_switch(path, mode);
        for key in 0..n {
            commit(&db, key);
        }
        // A process that dies writes nothing more: the journal and the file stay as they are.
        dead.store(true, Ordering::Release);
    }

    #[test]
    fn a_killed_process_loses_nothing_it_wrote() {
        // A lying disk leaves most commits in the journal only; without a power loss, the
        // kernel would still have written them.
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("db.redb");
        write_and_die(&path, DiskMode::Lying, 10);
        assert!(
            side_file(&path, "unsynced")
                .metadata()
                .expect("journal")
                .len()
                > 0
        );
        assert_eq!(keys(&path), (0..10).collect::<Vec<_>>());
    }

    /// Commits 0..n, then tries to commit key 99, whose fsync fails; then the process dies
    /// and power is lost (`seed`). Returns the commit's error.
    fn fail_a_sync_and_lose_power(path: &Path, n: u64, seed: u64) -> redb::CommitError {
        let (db, dead) = open_with_switch(path, DiskMode::Honest);
        for key in 0..n {
            commit(&db, key);
        }
        std::fs::write(side_file(path, "fail-fsync"), b"").expect("trigger");
        let txn = db.begin_write().expect("begin");
        {
            let mut table = txn.open_table(TABLE).expect("table");
            table
                .insert(99, vec![99u8; 3000].as_slice())
                .expect("insert");
        }
        let err = txn.commit().expect_err("a commit whose fsync fails");
        dead.store(true, Ordering::Release);
        drop(db);
        std::fs::remove_file(side_file(path, "fail-fsync")).expect("untrigger");
        mark_power_loss(path, seed).expect("mark");
        err
    }

    #[test]
    fn a_power_loss_keeps_every_synced_commit() {
        for seed in 0..24 {
            let dir = tempfile::tempdir().expect("dir");
            let path = dir.path().join("db.redb");
            fail_a_sync_and_lose_power(&path, 5, seed);
            assert!(
                side_file(&path, "unsynced")
                    .metadata()
                    .expect("journal")
                    .len()
                    > 0
            );
            let keys = keys(&path);
            // The unsynced commit may have reached the disk whole, or not at all.
            assert!(
                keys == [0, 1, 2, 3, 4] || keys == [0, 1, 2, 3, 4, 99],
                "seed {seed}: {keys:?}"
            );
            assert!(!side_file(&path, "power-loss").exists());
            let journal = side_file(&path, "unsynced")
                .metadata()
                .map_or(0, |m| m.len());
            assert_eq!(journal, 0, "seed {seed}: the journal was applied");
        }
    }

    #[test]
    fn a_failing_fsync_fails_the_commit() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("db.redb");
        let err = fail_a_sync_and_lose_power(&path, 1, 0);
        assert!(err.to_string().contains("simulated fsync failure"), "{err}");
    }

    #[test]
    fn a_power_loss_under_a_lying_disk_loses_acknowledged_commits() {
        let mut lost = 0;
        for seed in 0..8 {
            let dir = tempfile::tempdir().expect("dir");
            let path = dir.path().join("db.redb");
            write_and_die(&path, DiskMode::Lying, 10);
            mark_power_loss(&path, seed).expect("mark");
            let keys = keys(&path);
            lost += (0..10).filter(|k| !keys.contains(k)).count();
        }
        assert!(lost > 0, "a lying disk lost no commit in 8 power losses");
    }

    #[test]
    fn a_record_cut_short_ends_the_journal() {
        let records = vec![
            Record::Write {
                offset: 4096,
                data: vec![7; 10],
            },
            Record::SetLen(8192),
        ];
        let mut bytes: Vec<u8> = records.iter().flat_map(Record::encode).collect();
        assert_eq!(Record::decode_all(&bytes), records);
        bytes.extend_from_slice(
            &Record::Write {
                offset: 0,
                data: vec![1; 100],
            }
            .encode()[..50],
        );
        assert_eq!(Record::decode_all(&bytes), records);
        assert_eq!(pages_spanned(4095, 2), 2);
        assert_eq!(pages_spanned(4096, 4096), 1);
    }
}
