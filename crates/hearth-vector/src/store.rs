//! Durable indexes: the write-ahead log, snapshots, recovery and the
//! background applier.
//!
//! On disk, per index: `<root>/<account>/<index>/index.json` (the index
//! object), `snapshot.bin` (the applied state at some mutation, replaced
//! atomically) and `wal/<first-seq>.log` segments of framed records
//! (`len u32, crc32 u32, payload`). A write is acknowledged only after its
//! record is `fdatasync`ed. Recovery loads the snapshot, then queues every
//! logged mutation after it for the applier; a torn record at the tail (a
//! write that was never acknowledged) is cut off.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hearth_types::vectorize::{
    CreateIndexRequest, IndexInfo, IndexObject, ListVectorsResponse, Match, MetadataIndex,
    MetadataType, VectorId, VectorOutput,
};

use crate::VectorError;
use crate::codec::{Reader, Writer};
use crate::hnsw::HnswParams;
use crate::index::{IndexState, QueryOptions, Record, metadata_type_code, metadata_type_from_code};
use crate::input;
use crate::time::{iso8601, now_ms};

const SNAPSHOT_MAGIC: &[u8; 8] = b"HVSNAP01";

/// Tunables of the vector store.
#[derive(Debug, Clone)]
pub struct VectorizeOptions {
    /// Threads that link new vectors into the graph.
    pub build_threads: usize,
    /// Snapshot once this many log bytes accumulate after the last snapshot.
    pub snapshot_after_bytes: u64,
    pub hnsw: HnswParams,
    /// Default beam width of a query.
    pub ef_search: usize,
    /// Vectors applied per write-lock hold, so queries interleave with a
    /// large upsert.
    pub apply_chunk: usize,
}

impl Default for VectorizeOptions {
    fn default() -> Self {
        Self {
            build_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            snapshot_after_bytes: 64 << 20,
            hnsw: HnswParams::default(),
            ef_search: 100,
            apply_chunk: 256,
        }
    }
}

/// A logged change.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Insert(Vec<Record>),
    Upsert(Vec<Record>),
    Delete(Vec<String>),
    CreateMetadataIndex {
        property: String,
        kind: MetadataType,
    },
    DeleteMetadataIndex {
        property: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    pub seq: u64,
    pub id: String,
    pub time_ms: i64,
    pub op: Op,
}

impl Mutation {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(self.seq);
        w.str(&self.id);
        w.i64(self.time_ms);
        let records = |w: &mut Writer, rs: &[Record]| {
            w.u32(rs.len() as u32);
            for r in rs {
                w.str(&r.id);
                w.opt_str(r.namespace.as_deref());
                w.metadata(r.metadata.as_ref());
                w.f32s(&r.values);
            }
        };
        match &self.op {
            Op::Insert(rs) => {
                w.u8(0);
                records(&mut w, rs);
            }
            Op::Upsert(rs) => {
                w.u8(1);
                records(&mut w, rs);
            }
            Op::Delete(ids) => {
                w.u8(2);
                w.u32(ids.len() as u32);
                for id in ids {
                    w.str(id);
                }
            }
            Op::CreateMetadataIndex { property, kind } => {
                w.u8(3);
                w.str(property);
                w.u8(metadata_type_code(*kind));
            }
            Op::DeleteMetadataIndex { property } => {
                w.u8(4);
                w.str(property);
            }
        }
        w.buf
    }

    fn decode(bytes: &[u8]) -> Result<Self, VectorError> {
        let mut r = Reader::new(bytes);
        let seq = r.u64()?;
        let id = r.str()?;
        let time_ms = r.i64()?;
        let records = |r: &mut Reader<'_>| -> Result<Vec<Record>, VectorError> {
            let n = r.u32()? as usize;
            let mut out = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                out.push(Record {
                    id: r.str()?,
                    namespace: r.opt_str()?,
                    metadata: r.metadata()?,
                    values: r.f32s()?,
                });
            }
            Ok(out)
        };
        let op = match r.u8()? {
            0 => Op::Insert(records(&mut r)?),
            1 => Op::Upsert(records(&mut r)?),
            2 => {
                let n = r.u32()? as usize;
                let mut ids = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    ids.push(r.str()?);
                }
                Op::Delete(ids)
            }
            3 => Op::CreateMetadataIndex {
                property: r.str()?,
                kind: metadata_type_from_code(r.u8()?)
                    .ok_or_else(|| VectorError::Corrupt("metadata type".into()))?,
            },
            4 => Op::DeleteMetadataIndex { property: r.str()? },
            _ => return Err(VectorError::Corrupt("unknown operation".into())),
        };
        Ok(Mutation {
            seq,
            id,
            time_ms,
            op,
        })
    }
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or
/// the new one.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.log")
}

/// The segments of a log folder, by first sequence number.
fn segments(wal: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(wal)? {
        let path = entry?.path();
        if let Some(seq) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push((seq, path));
        }
    }
    out.sort();
    Ok(out)
}

struct Log {
    dir: PathBuf,
    file: File,
    file_len: u64,
    next_seq: u64,
    bytes_since_snapshot: u64,
}

impl Log {
    fn open_segment(dir: &Path, first_seq: u64) -> std::io::Result<File> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(segment_name(first_seq)))?;
        fsync_dir(dir)?;
        Ok(file)
    }

    fn append(&mut self, mutation: &Mutation) -> std::io::Result<()> {
        let payload = mutation.encode();
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        let written = self
            .file
            .write_all(&frame)
            .and_then(|_| self.file.sync_data());
        if let Err(e) = written {
            // Cut a partial record off so the next append starts clean.
            let _ = self.file.set_len(self.file_len);
            return Err(e);
        }
        self.file_len += frame.len() as u64;
        self.bytes_since_snapshot += frame.len() as u64;
        Ok(())
    }

    /// Starts a new segment so that older ones can be deleted once a
    /// snapshot covers them.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = Self::open_segment(&self.dir, self.next_seq)?;
        self.file_len = 0;
        Ok(())
    }
}

/// Reads every intact record of a segment; a torn or corrupt tail is
/// reported by the offset where good data ends.
fn read_segment(path: &Path) -> std::io::Result<(Vec<Mutation>, u64, bool)> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let len =
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let crc = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        match Mutation::decode(payload) {
            Ok(m) => out.push(m),
            Err(_) => break,
        }
        at += 8 + len;
    }
    Ok((out, at as u64, at != bytes.len()))
}

/// One open index.
pub struct IndexHandle {
    object: IndexObject,
    dir: PathBuf,
    options: VectorizeOptions,
    state: RwLock<IndexState>,
    log: Mutex<Log>,
    pending: Mutex<VecDeque<Arc<Mutation>>>,
    applying: AtomicBool,
    dropped: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl IndexHandle {
    fn read(&self) -> RwLockReadGuard<'_, IndexState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, IndexState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn object(&self) -> &IndexObject {
        &self.object
    }

    pub fn dimensions(&self) -> u32 {
        self.object.config.dimensions
    }

    fn open(dir: PathBuf, options: VectorizeOptions) -> Result<Arc<Self>, VectorError> {
        let object: IndexObject = serde_json::from_slice(&fs::read(dir.join("index.json"))?)
            .map_err(|e| VectorError::Corrupt(format!("{}: {e}", dir.display())))?;
        let snapshot_path = dir.join("snapshot.bin");
        let mut state = if snapshot_path.exists() {
            let bytes = fs::read(&snapshot_path)?;
            decode_snapshot(&bytes)?
        } else {
            IndexState::new(object.config, options.hnsw)
        };
        if state.config() != object.config {
            return Err(VectorError::Corrupt(format!(
                "{}: snapshot config differs from index.json",
                dir.display()
            )));
        }
        let wal = dir.join("wal");
        fs::create_dir_all(&wal)?;
        let mut pending = VecDeque::new();
        let mut last_seq = state.applied.seq;
        let mut bytes_after_snapshot = 0;
        let segs = segments(&wal)?;
        for (i, (_, path)) in segs.iter().enumerate() {
            let (mutations, good_len, torn) = read_segment(path)?;
            if torn {
                if i + 1 == segs.len() {
                    tracing::warn!(segment = %path.display(), "cutting a torn record off the log tail (never acknowledged)");
                    OpenOptions::new()
                        .write(true)
                        .open(path)?
                        .set_len(good_len)?;
                } else {
                    return Err(VectorError::Corrupt(format!(
                        "{} is damaged before its end",
                        path.display()
                    )));
                }
            }
            for m in mutations {
                last_seq = last_seq.max(m.seq);
                if m.seq > state.applied.seq {
                    bytes_after_snapshot += m.encode().len() as u64 + 8;
                    pending.push_back(Arc::new(m));
                }
            }
        }
        // A state rebuilt from nothing but the log keeps the configured graph parameters.
        if state.is_empty() && state.applied.seq == 0 {
            state = IndexState::new(object.config, options.hnsw);
        }
        let next_seq = last_seq + 1;
        let file = Log::open_segment(&wal, next_seq)?;
        let handle = Arc::new(Self {
            object,
            dir,
            options,
            state: RwLock::new(state),
            log: Mutex::new(Log {
                dir: wal,
                file,
                file_len: 0,
                next_seq,
                bytes_since_snapshot: bytes_after_snapshot,
            }),
            pending: Mutex::new(pending),
            applying: AtomicBool::new(false),
            dropped: AtomicBool::new(false),
        });
        handle.kick();
        Ok(handle)
    }

    /// Logs `op`, durably, and queues it; returns the mutation id.
    fn submit(self: &Arc<Self>, op: Op) -> Result<String, VectorError> {
        if self.dropped.load(Ordering::Acquire) {
            return Err(VectorError::NotFound(self.object.name.clone()));
        }
        let id = uuid::Uuid::new_v4().to_string();
        {
            let mut log = lock(&self.log);
            let mutation = Mutation {
                seq: log.next_seq,
                id: id.clone(),
                time_ms: now_ms(),
                op,
            };
            log.append(&mutation)?;
            log.next_seq += 1;
            // Queued under the log lock so the applier sees log order.
            lock(&self.pending).push_back(Arc::new(mutation));
        }
        self.kick();
        Ok(id)
    }

    /// Starts the applier unless one is running.
    fn kick(self: &Arc<Self>) {
        if lock(&self.pending).is_empty() || self.applying.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("vectorize-apply".into())
            .spawn(move || this.apply_pending());
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the vectorize applier");
            self.applying.store(false, Ordering::Release);
        }
    }

    fn apply_pending(self: Arc<Self>) {
        loop {
            if self.dropped.load(Ordering::Acquire) {
                return;
            }
            let next = lock(&self.pending).front().cloned();
            let Some(mutation) = next else {
                self.applying.store(false, Ordering::Release);
                // A submit may have queued between the check and the store.
                if !lock(&self.pending).is_empty() && !self.applying.swap(true, Ordering::AcqRel) {
                    continue;
                }
                return;
            };
            self.apply(&mutation);
            lock(&self.pending).pop_front();
            let due = lock(&self.log).bytes_since_snapshot >= self.options.snapshot_after_bytes;
            if due && let Err(e) = self.snapshot() {
                tracing::error!(index = %self.object.name, error = %e, "snapshot failed; the log still holds every write");
            }
        }
    }

    fn apply(&self, m: &Mutation) {
        let threads = self.options.build_threads;
        match &m.op {
            Op::Insert(records) | Op::Upsert(records) => {
                let upsert = matches!(m.op, Op::Upsert(_));
                for chunk in records.chunks(self.options.apply_chunk.max(1)) {
                    self.write().write(chunk, upsert, m.seq, threads);
                }
            }
            Op::Delete(ids) => self.write().delete(ids),
            Op::CreateMetadataIndex { property, kind } => {
                self.write().create_metadata_index(property, *kind, m.seq)
            }
            Op::DeleteMetadataIndex { property } => self.write().delete_metadata_index(property),
        }
        self.write().applied = crate::index::Applied {
            seq: m.seq,
            mutation: Some(m.id.clone()),
            time_ms: Some(now_ms()),
        };
    }

    /// Writes the applied state, compacting first when deletes left many
    /// tombstones, then drops the log segments the snapshot covers. Runs on
    /// the applier thread, so the state does not change underneath it.
    pub fn snapshot(&self) -> Result<(), VectorError> {
        {
            let state = self.read();
            let heavy = state.tombstones() > 0
                && state.tombstones() * 4 >= state.len() + state.tombstones();
            if heavy {
                let fresh = state.compacted(self.options.build_threads);
                drop(state);
                *self.write() = fresh;
            }
        }
        lock(&self.log).rotate()?;
        let (bytes, applied_seq) = {
            let state = self.read();
            (encode_snapshot(&state), state.applied.seq)
        };
        write_atomic(&self.dir.join("snapshot.bin"), &bytes)?;
        let mut log = lock(&self.log);
        let segs = segments(&log.dir)?;
        for pair in segs.windows(2) {
            let (_, path) = &pair[0];
            let (next_first, _) = pair[1];
            if next_first <= applied_seq + 1 {
                fs::remove_file(path)?;
            }
        }
        fsync_dir(&log.dir)?;
        log.bytes_since_snapshot = 0;
        Ok(())
    }

    pub fn insert(self: &Arc<Self>, records: Vec<Record>) -> Result<String, VectorError> {
        self.submit(Op::Insert(records))
    }

    pub fn upsert(self: &Arc<Self>, records: Vec<Record>) -> Result<String, VectorError> {
        self.submit(Op::Upsert(records))
    }

    pub fn delete_by_ids(self: &Arc<Self>, ids: Vec<String>) -> Result<String, VectorError> {
        input::check_ids(&ids)?;
        self.submit(Op::Delete(ids))
    }

    pub fn create_metadata_index(
        self: &Arc<Self>,
        property: String,
        kind: MetadataType,
    ) -> Result<String, VectorError> {
        if property.is_empty()
            || property.len() > 512
            || property.starts_with('$')
            || property.contains('"')
        {
            return Err(VectorError::invalid(format!(
                "`propertyName` {property:?} is not a valid property name"
            )));
        }
        let existing = self.read().metadata_indexes();
        if existing.iter().any(|m| m.property_name == property) {
            return Err(VectorError::invalid(format!(
                "a metadata index on `{property}` already exists"
            )));
        }
        if existing.len() >= input::MAX_METADATA_INDEXES {
            return Err(VectorError::invalid(format!(
                "an index takes at most {} metadata indexes",
                input::MAX_METADATA_INDEXES
            )));
        }
        self.submit(Op::CreateMetadataIndex { property, kind })
    }

    pub fn delete_metadata_index(
        self: &Arc<Self>,
        property: String,
    ) -> Result<String, VectorError> {
        if !self
            .read()
            .metadata_indexes()
            .iter()
            .any(|m| m.property_name == property)
        {
            return Err(VectorError::invalid(format!(
                "there is no metadata index on `{property}`"
            )));
        }
        self.submit(Op::DeleteMetadataIndex { property })
    }

    pub fn metadata_indexes(&self) -> Vec<MetadataIndex> {
        self.read().metadata_indexes()
    }

    pub fn info(&self) -> IndexInfo {
        let state = self.read();
        IndexInfo {
            dimensions: self.object.config.dimensions,
            vector_count: state.len(),
            processed_up_to_datetime: state.applied.time_ms.map(iso8601),
            processed_up_to_mutation: state.applied.mutation.clone(),
        }
    }

    /// True once every acknowledged write is applied.
    pub fn is_caught_up(&self) -> bool {
        lock(&self.pending).is_empty()
    }

    pub fn query(&self, vector: &[f32], options: &QueryOptions) -> Vec<Match> {
        self.read().query(vector, options)
    }

    pub fn values_of(&self, id: &str) -> Option<Vec<f32>> {
        self.read().values_of(id)
    }

    pub fn get_by_ids(&self, ids: &[String]) -> Result<Vec<VectorOutput>, VectorError> {
        input::check_ids(ids)?;
        Ok(self.read().get(ids))
    }

    pub fn list_vectors(&self, count: usize, cursor: Option<&str>) -> ListVectorsResponse {
        let state = self.read();
        let (ids, more) = state.list(count, cursor);
        ListVectorsResponse {
            count: ids.len(),
            total_count: state.len(),
            is_truncated: more,
            next_cursor: more.then(|| ids.last().cloned()).flatten(),
            cursor_expiration_timestamp: more.then(|| iso8601(now_ms() + 3_600_000)),
            vectors: ids.into_iter().map(|id| VectorId { id }).collect(),
        }
    }

    pub fn default_ef(&self) -> usize {
        self.options.ef_search
    }
}

fn encode_snapshot(state: &IndexState) -> Vec<u8> {
    let mut w = Writer::default();
    w.buf.extend_from_slice(SNAPSHOT_MAGIC);
    state.encode(&mut w);
    let crc = crc32fast::hash(&w.buf[SNAPSHOT_MAGIC.len()..]);
    w.u32(crc);
    w.buf
}

fn decode_snapshot(bytes: &[u8]) -> Result<IndexState, VectorError> {
    let corrupt = |m: &str| VectorError::Corrupt(format!("snapshot: {m}"));
    if bytes.len() < SNAPSHOT_MAGIC.len() + 4 || &bytes[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
        return Err(corrupt("bad header"));
    }
    let body = &bytes[SNAPSHOT_MAGIC.len()..bytes.len() - 4];
    let crc = u32::from_le_bytes(
        bytes[bytes.len() - 4..]
            .try_into()
            .map_err(|_| corrupt("crc"))?,
    );
    if crc32fast::hash(body) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let mut r = Reader::new(body);
    IndexState::decode(&mut r)
}

/// Every index of every account under one folder.
pub struct Vectorize {
    root: PathBuf,
    options: VectorizeOptions,
    indexes: RwLock<BTreeMap<(String, String), Arc<IndexHandle>>>,
    admin: Mutex<()>,
}

fn safe_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Vectorize {
    /// Opens (recovering) every index under `root`.
    pub fn open(root: impl Into<PathBuf>, options: VectorizeOptions) -> Result<Self, VectorError> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        let mut indexes = BTreeMap::new();
        for account in fs::read_dir(&root)? {
            let account = account?;
            let Some(account_id) = account.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !account.file_type()?.is_dir() || account_id.starts_with('.') {
                continue;
            }
            for index in fs::read_dir(account.path())? {
                let index = index?;
                let Some(name) = index.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if name.starts_with('.') {
                    // An unfinished create or delete; nothing acknowledged lives there.
                    let _ = fs::remove_dir_all(index.path());
                    continue;
                }
                let handle = IndexHandle::open(index.path(), options.clone())?;
                indexes.insert((account_id.clone(), name), handle);
            }
        }
        Ok(Self {
            root,
            options,
            indexes: RwLock::new(indexes),
            admin: Mutex::new(()),
        })
    }

    pub fn options(&self) -> &VectorizeOptions {
        &self.options
    }

    pub fn create(
        &self,
        account: &str,
        req: CreateIndexRequest,
    ) -> Result<IndexObject, VectorError> {
        input::validate_index_name(&req.name)?;
        let config = input::index_config(&req.config)?;
        if !safe_segment(account) {
            return Err(VectorError::invalid(
                "account id is not usable as a folder name",
            ));
        }
        let _admin = lock(&self.admin);
        let count = self
            .indexes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|(a, _)| a == account)
            .count();
        if count >= input::MAX_INDEXES_PER_ACCOUNT {
            return Err(VectorError::invalid(format!(
                "an account holds at most {} indexes",
                input::MAX_INDEXES_PER_ACCOUNT
            )));
        }
        let key = (account.to_string(), req.name.clone());
        if self
            .indexes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&key)
        {
            return Err(VectorError::Exists(req.name));
        }
        let now = iso8601(now_ms());
        let object = IndexObject {
            name: req.name.clone(),
            description: req.description,
            config,
            created_on: now.clone(),
            modified_on: now,
        };
        let account_dir = self.root.join(account);
        fs::create_dir_all(&account_dir)?;
        let staging = account_dir.join(format!(".creating-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(staging.join("wal"))?;
        let json =
            serde_json::to_vec_pretty(&object).map_err(|e| VectorError::Corrupt(e.to_string()))?;
        write_atomic(&staging.join("index.json"), &json)?;
        let dir = account_dir.join(&req.name);
        fs::rename(&staging, &dir)?;
        fsync_dir(&account_dir)?;
        let handle = IndexHandle::open(dir, self.options.clone())?;
        self.indexes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, handle);
        Ok(object)
    }

    pub fn list(&self, account: &str) -> Vec<IndexObject> {
        self.indexes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((a, _), _)| a == account)
            .map(|(_, h)| h.object.clone())
            .collect()
    }

    pub fn get(&self, account: &str, name: &str) -> Result<Arc<IndexHandle>, VectorError> {
        self.indexes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(account.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| VectorError::NotFound(name.to_string()))
    }

    /// Deletes an index and its data; the name is free again at once.
    pub fn delete(&self, account: &str, name: &str) -> Result<(), VectorError> {
        let _admin = lock(&self.admin);
        let handle = self
            .indexes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(account.to_string(), name.to_string()))
            .ok_or_else(|| VectorError::NotFound(name.to_string()))?;
        handle.dropped.store(true, Ordering::Release);
        // Hold the log so no write lands in the folder while it moves.
        let _log = lock(&handle.log);
        let account_dir = self.root.join(account);
        let trash = account_dir.join(format!(".deleted-{}", uuid::Uuid::new_v4()));
        fs::rename(&handle.dir, &trash)?;
        fsync_dir(&account_dir)?;
        std::thread::spawn(move || {
            if let Err(e) = fs::remove_dir_all(&trash) {
                tracing::warn!(path = %trash.display(), error = %e, "could not remove a deleted index's files");
            }
        });
        Ok(())
    }
}
