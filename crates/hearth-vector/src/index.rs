//! The applied state of one index: stored vectors, ids, namespaces, metadata
//! indexes and the graph. Mutations reach it only through the log (see
//! [`crate::store`]); this type applies them and answers reads.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::ops::Bound as RangeBound;

use hearth_types::vectorize::{
    IndexConfig, Match, MetadataIndex, MetadataType, Metric, ReturnMetadata, VectorOutput,
};
use roaring::RoaringBitmap;
use serde_json::{Map, Value};

use crate::VectorError;
use crate::codec::{Reader, Writer};
use crate::distance::{dot, l2_squared};
use crate::filter::{Condition, Filter, Scalar};
use crate::hnsw::{Hnsw, HnswParams, Scored};
use crate::storage::VectorRows;

/// Strings are indexed on their first 64 bytes, as Vectorize does.
pub const MAX_INDEXED_STRING_BYTES: usize = 64;

/// A vector on its way in, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: String,
    pub values: Vec<f32>,
    pub namespace: Option<String>,
    pub metadata: Option<Map<String, Value>>,
}

/// A key of a metadata index; one index holds one kind.
#[derive(Debug, Clone, PartialEq)]
enum IndexKey {
    Bool(bool),
    Number(f64),
    String(String),
}

impl Eq for IndexKey {}

impl PartialOrd for IndexKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for IndexKey {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (IndexKey::Bool(a), IndexKey::Bool(b)) => a.cmp(b),
            (IndexKey::Number(a), IndexKey::Number(b)) => a.total_cmp(b),
            (IndexKey::String(a), IndexKey::String(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl IndexKey {
    fn rank(&self) -> u8 {
        match self {
            IndexKey::Bool(_) => 0,
            IndexKey::Number(_) => 1,
            IndexKey::String(_) => 2,
        }
    }

    fn from_value(kind: MetadataType, v: &Value) -> Option<Self> {
        match (kind, v) {
            (MetadataType::String, Value::String(s)) => Some(IndexKey::String(truncate(s))),
            (MetadataType::Number, Value::Number(n)) => n.as_f64().map(IndexKey::Number),
            (MetadataType::Boolean, Value::Bool(b)) => Some(IndexKey::Bool(*b)),
            _ => None,
        }
    }

    fn from_scalar(kind: MetadataType, s: &Scalar) -> Option<Self> {
        match (kind, s) {
            (MetadataType::String, Scalar::String(s)) => Some(IndexKey::String(truncate(s))),
            (MetadataType::Number, Scalar::Number(n)) => Some(IndexKey::Number(*n)),
            (MetadataType::Boolean, Scalar::Bool(b)) => Some(IndexKey::Bool(*b)),
            _ => None,
        }
    }

    fn to_value(&self) -> Value {
        match self {
            IndexKey::Bool(b) => Value::Bool(*b),
            IndexKey::Number(n) => {
                serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
            }
            IndexKey::String(s) => Value::String(s.clone()),
        }
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_INDEXED_STRING_BYTES {
        return s.to_string();
    }
    let mut end = MAX_INDEXED_STRING_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// `pandas.nice` reaches `{"pandas": {"nice": ..}}`.
fn lookup<'a>(metadata: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut current = metadata.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

#[derive(Debug, Clone)]
struct MetaIndex {
    kind: MetadataType,
    /// Vectors written at or before this mutation are not in the index:
    /// Vectorize indexes only what is written after the index exists.
    created_seq: u64,
    entries: BTreeMap<IndexKey, RoaringBitmap>,
}

#[derive(Debug, Clone)]
struct Slot {
    id: String,
    namespace: Option<String>,
    /// Compact JSON text: a parsed map costs a B-tree node (~600 bytes)
    /// even for one key, the text costs its length.
    metadata: Option<Box<str>>,
    write_seq: u64,
}

impl Slot {
    fn metadata_map(&self) -> Option<Map<String, Value>> {
        match serde_json::from_str(self.metadata.as_deref()?) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        }
    }
}

fn metadata_text(m: &Map<String, Value>) -> Box<str> {
    serde_json::to_string(m)
        .unwrap_or_else(|_| "{}".into())
        .into_boxed_str()
}

/// The last applied mutation, for `info`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    pub seq: u64,
    pub mutation: Option<String>,
    pub time_ms: Option<i64>,
}

/// How to answer a query.
#[derive(Debug, Clone)]
pub struct QueryOptions {
    pub top_k: usize,
    pub namespace: Option<String>,
    pub filter: Option<Filter>,
    pub return_values: bool,
    pub return_metadata: ReturnMetadata,
    /// Beam width of the graph search.
    pub ef: usize,
}

pub struct IndexState {
    config: IndexConfig,
    dims: usize,
    values: VectorRows,
    slots: Vec<Slot>,
    deleted: Vec<bool>,
    ids: BTreeMap<String, u32>,
    live: RoaringBitmap,
    namespaces: HashMap<String, RoaringBitmap>,
    meta_indexes: BTreeMap<String, MetaIndex>,
    graph: Hnsw,
    pub applied: Applied,
}

/// Filtered queries scan the kept vectors exactly when there are at most
/// this many of them (or a fiftieth of the index): below it an exact scan is
/// both faster and exact, above it the graph search wins.
const EXACT_SCAN_MAX: u64 = 10_000;

/// A deterministic uniform draw for node `i`'s level (SplitMix64), so a
/// rebuilt or replayed index gets the same graph shape.
fn uniform(i: u64) -> f64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

impl IndexState {
    pub fn new(config: IndexConfig, params: HnswParams) -> Self {
        Self {
            config,
            dims: config.dimensions as usize,
            values: VectorRows::new(config.dimensions as usize),
            slots: Vec::new(),
            deleted: Vec::new(),
            ids: BTreeMap::new(),
            live: RoaringBitmap::new(),
            namespaces: HashMap::new(),
            meta_indexes: BTreeMap::new(),
            graph: Hnsw::new(params),
            applied: Applied::default(),
        }
    }

    pub fn config(&self) -> IndexConfig {
        self.config
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Slots held by deleted or replaced vectors, reclaimed by [`IndexState::compacted`].
    pub fn tombstones(&self) -> usize {
        self.slots.len() - self.ids.len()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }

    pub fn metadata_indexes(&self) -> Vec<MetadataIndex> {
        self.meta_indexes
            .iter()
            .map(|(p, m)| MetadataIndex {
                property_name: p.clone(),
                index_type: m.kind,
            })
            .collect()
    }

    #[inline]
    fn vector(&self, slot: u32) -> &[f32] {
        self.values.get(slot)
    }

    #[inline]
    fn inv_norm(&self, slot: u32) -> f32 {
        self.values.inv_norm(slot)
    }

    fn push_values(&mut self, values: &[f32]) {
        self.values.push(values);
    }

    /// Internal distance between stored vectors: lower is closer.
    fn between(&self, a: u32, b: u32) -> f32 {
        let (va, vb) = (self.vector(a), self.vector(b));
        match self.config.metric {
            Metric::Cosine => 1.0 - dot(va, vb) * self.inv_norm(a) * self.inv_norm(b),
            Metric::Euclidean => l2_squared(va, vb),
            Metric::DotProduct => -dot(va, vb),
        }
    }

    fn indexed_keys(&self, slot: &Slot) -> Vec<(String, IndexKey)> {
        if slot.metadata.is_none()
            || !self
                .meta_indexes
                .values()
                .any(|m| slot.write_seq > m.created_seq)
        {
            return Vec::new();
        }
        self.keys_of(slot.metadata_map().as_ref(), slot.write_seq)
    }

    fn keys_of(
        &self,
        metadata: Option<&Map<String, Value>>,
        write_seq: u64,
    ) -> Vec<(String, IndexKey)> {
        let Some(metadata) = metadata else {
            return Vec::new();
        };
        self.meta_indexes
            .iter()
            .filter(|(_, m)| write_seq > m.created_seq)
            .filter_map(|(p, m)| {
                let key = IndexKey::from_value(m.kind, lookup(metadata, p)?)?;
                Some((p.clone(), key))
            })
            .collect()
    }

    fn remove(&mut self, id: &str) {
        let Some(slot_no) = self.ids.remove(id) else {
            return;
        };
        let keys = self.indexed_keys(&self.slots[slot_no as usize]);
        for (property, key) in keys {
            if let Some(index) = self.meta_indexes.get_mut(&property)
                && let Some(bits) = index.entries.get_mut(&key)
            {
                bits.remove(slot_no);
                if bits.is_empty() {
                    index.entries.remove(&key);
                }
            }
        }
        let slot = &mut self.slots[slot_no as usize];
        if let Some(ns) = slot.namespace.take()
            && let Some(bits) = self.namespaces.get_mut(&ns)
        {
            bits.remove(slot_no);
            if bits.is_empty() {
                self.namespaces.remove(&ns);
            }
        }
        // The values stay until compaction: the graph still routes through them.
        slot.metadata = None;
        self.deleted[slot_no as usize] = true;
        self.live.remove(slot_no);
    }

    /// Applies part of an insert (`upsert == false`: an existing id keeps
    /// its first write) or an upsert (full replacement). `threads` link the
    /// new vectors into the graph.
    pub fn write(&mut self, records: &[Record], upsert: bool, seq: u64, threads: usize) {
        let first = self.slots.len();
        for record in records {
            if self.ids.contains_key(&record.id) {
                if !upsert {
                    continue;
                }
                self.remove(&record.id);
            }
            let slot = Slot {
                id: record.id.clone(),
                namespace: record.namespace.clone(),
                metadata: record.metadata.as_ref().map(metadata_text),
                write_seq: seq,
            };
            // The record's parsed metadata is at hand: no need to re-read the text.
            let keys = self.keys_of(record.metadata.as_ref(), seq);
            self.push_slot_with_keys(slot, &record.values, keys);
        }
        self.link_from(first, threads);
    }

    fn link_from(&mut self, first: usize, threads: usize) {
        let total = self.slots.len();
        if first >= total {
            return;
        }
        let levels: Vec<u8> = (first..total)
            .map(|i| self.graph.draw_level(uniform(i as u64)))
            .collect();
        self.graph.push_nodes(&levels);
        let this = &*self;
        this.graph.link_range(
            first,
            &|a, b| this.between(a, b),
            &|n| crate::distance::prefetch(this.vector(n)),
            threads,
        );
    }

    pub fn delete(&mut self, ids: &[String]) {
        for id in ids {
            self.remove(id);
        }
    }

    /// Creates (or re-creates) a metadata index; vectors already stored
    /// are not indexed for it, as on Vectorize.
    pub fn create_metadata_index(&mut self, property: &str, kind: MetadataType, seq: u64) {
        self.meta_indexes.insert(
            property.to_string(),
            MetaIndex {
                kind,
                created_seq: seq,
                entries: BTreeMap::new(),
            },
        );
    }

    pub fn delete_metadata_index(&mut self, property: &str) {
        self.meta_indexes.remove(property);
    }

    fn clause_bits(&self, key: &str, condition: &Condition) -> RoaringBitmap {
        let Some(index) = self.meta_indexes.get(key) else {
            // Filtering needs a metadata index; nothing is indexed, so no
            // value matches (and every vector differs from it).
            return match condition {
                Condition::Ne(_) | Condition::Nin(_) => self.live.clone(),
                _ => RoaringBitmap::new(),
            };
        };
        let eq = |s: &Scalar| -> RoaringBitmap {
            IndexKey::from_scalar(index.kind, s)
                .and_then(|k| index.entries.get(&k).cloned())
                .unwrap_or_default()
        };
        match condition {
            Condition::Eq(s) => eq(s),
            Condition::Ne(s) => &self.live - &eq(s),
            Condition::In(list) => list.iter().map(eq).fold(RoaringBitmap::new(), |a, b| a | b),
            Condition::Nin(list) => {
                let hit = list.iter().map(eq).fold(RoaringBitmap::new(), |a, b| a | b);
                &self.live - &hit
            }
            Condition::Range { lower, upper } => {
                let to_bound = |b: &Option<crate::filter::Bound>| -> Option<RangeBound<IndexKey>> {
                    match b {
                        None => Some(RangeBound::Unbounded),
                        Some(b) => {
                            let key = IndexKey::from_scalar(index.kind, &b.value)?;
                            Some(if b.inclusive {
                                RangeBound::Included(key)
                            } else {
                                RangeBound::Excluded(key)
                            })
                        }
                    }
                };
                let (Some(lo), Some(hi)) = (to_bound(lower), to_bound(upper)) else {
                    return RoaringBitmap::new();
                };
                if let (
                    RangeBound::Included(a) | RangeBound::Excluded(a),
                    RangeBound::Included(b) | RangeBound::Excluded(b),
                ) = (&lo, &hi)
                {
                    let empty_range = a > b
                        || (a == b
                            && !(matches!(lo, RangeBound::Included(_))
                                && matches!(hi, RangeBound::Included(_))));
                    if empty_range {
                        return RoaringBitmap::new();
                    }
                }
                index
                    .entries
                    .range((lo, hi))
                    .fold(RoaringBitmap::new(), |acc, (_, bits)| acc | bits)
            }
        }
    }

    /// The slots a query may return, or `None` for "every live vector".
    fn candidates(&self, options: &QueryOptions) -> Option<RoaringBitmap> {
        let mut bits: Option<RoaringBitmap> = None;
        if let Some(ns) = &options.namespace {
            bits = Some(self.namespaces.get(ns).cloned().unwrap_or_default());
        }
        if let Some(filter) = &options.filter {
            for clause in &filter.clauses {
                let clause_bits = self.clause_bits(&clause.key, &clause.condition);
                bits = Some(match bits {
                    None => clause_bits,
                    Some(b) => b & clause_bits,
                });
            }
        }
        bits
    }

    /// The `top_k` nearest vectors to `query` (already checked for length).
    pub fn query(&self, query: &[f32], options: &QueryOptions) -> Vec<Match> {
        let q_norm = dot(query, query).sqrt();
        let inv_q = if q_norm > 0.0 { 1.0 / q_norm } else { 0.0 };
        let metric = self.config.metric;
        let distance = |slot: u32| -> f32 {
            let v = self.vector(slot);
            match metric {
                Metric::Cosine => 1.0 - dot(query, v) * inv_q * self.inv_norm(slot),
                Metric::Euclidean => l2_squared(query, v),
                Metric::DotProduct => -dot(query, v),
            }
        };
        let k = options.top_k;
        let found: Vec<Scored> = match self.candidates(options) {
            Some(bits) if bits.len() <= EXACT_SCAN_MAX.max(self.live.len() / 50) => {
                let slots: Vec<u32> = bits.iter().collect();
                let mut heap: BinaryHeap<Scored> = BinaryHeap::with_capacity(k + 1);
                let mut offer = |s: Scored| {
                    if heap.len() < k {
                        heap.push(s);
                    } else if heap.peek().is_some_and(|w| s < *w) {
                        heap.pop();
                        heap.push(s);
                    }
                };
                let mut groups = slots.chunks_exact(4);
                for (g, group) in groups.by_ref().enumerate() {
                    // Kept vectors are scattered: fetch the group after next
                    // while scoring this one.
                    if let Some(ahead) = slots.get((g + 2) * 4..(g + 3) * 4) {
                        for &a in ahead {
                            crate::distance::prefetch_all(self.vector(a));
                        }
                    }
                    let rows = [
                        self.vector(group[0]),
                        self.vector(group[1]),
                        self.vector(group[2]),
                        self.vector(group[3]),
                    ];
                    match metric {
                        Metric::Euclidean => {
                            for &slot in group {
                                offer(Scored {
                                    dist: distance(slot),
                                    node: slot,
                                });
                            }
                        }
                        Metric::Cosine | Metric::DotProduct => {
                            let dots = crate::distance::dot4(query, rows);
                            for (&slot, d) in group.iter().zip(dots) {
                                let dist = if metric == Metric::Cosine {
                                    1.0 - d * inv_q * self.inv_norm(slot)
                                } else {
                                    -d
                                };
                                offer(Scored { dist, node: slot });
                            }
                        }
                    }
                }
                for &slot in groups.remainder() {
                    offer(Scored {
                        dist: distance(slot),
                        node: slot,
                    });
                }
                let mut v = heap.into_vec();
                v.sort_unstable();
                v
            }
            Some(bits) => self.graph.search(
                distance,
                |n| !self.deleted[n as usize] && bits.contains(n),
                |n| crate::distance::prefetch(self.vector(n)),
                k,
                options.ef,
            ),
            None => self.graph.search(
                distance,
                |n| !self.deleted[n as usize],
                |n| crate::distance::prefetch(self.vector(n)),
                k,
                options.ef,
            ),
        };
        found
            .into_iter()
            .map(|s| {
                let slot = &self.slots[s.node as usize];
                let score = match metric {
                    Metric::Cosine => 1.0 - s.dist,
                    Metric::Euclidean => s.dist.max(0.0).sqrt(),
                    Metric::DotProduct => s.dist,
                };
                Match {
                    id: slot.id.clone(),
                    score,
                    values: options.return_values.then(|| self.vector(s.node).to_vec()),
                    metadata: self.metadata_out(slot, options.return_metadata),
                    namespace: slot.namespace.clone(),
                }
            })
            .collect()
    }

    fn metadata_out(&self, slot: &Slot, mode: ReturnMetadata) -> Option<Map<String, Value>> {
        match mode {
            ReturnMetadata::None => None,
            ReturnMetadata::All => slot.metadata_map(),
            ReturnMetadata::Indexed => {
                let keys = self.indexed_keys(slot);
                (!keys.is_empty())
                    .then(|| keys.into_iter().map(|(p, k)| (p, k.to_value())).collect())
            }
        }
    }

    /// The stored vector of `id`, for `queryById`.
    pub fn values_of(&self, id: &str) -> Option<Vec<f32>> {
        self.ids.get(id).map(|&s| self.vector(s).to_vec())
    }

    pub fn get(&self, ids: &[String]) -> Vec<VectorOutput> {
        ids.iter()
            .filter_map(|id| {
                let &slot_no = self.ids.get(id)?;
                let slot = &self.slots[slot_no as usize];
                Some(VectorOutput {
                    id: slot.id.clone(),
                    values: self.vector(slot_no).to_vec(),
                    metadata: slot.metadata_map(),
                    namespace: slot.namespace.clone(),
                })
            })
            .collect()
    }

    /// Up to `count` ids after `cursor`, in id order, and whether more follow.
    pub fn list(&self, count: usize, cursor: Option<&str>) -> (Vec<String>, bool) {
        let range = match cursor {
            Some(c) => self
                .ids
                .range::<str, _>((RangeBound::Excluded(c), RangeBound::Unbounded)),
            None => self.ids.range::<str, _>(..),
        };
        let mut out: Vec<String> = range.take(count + 1).map(|(id, _)| id.clone()).collect();
        let more = out.len() > count;
        out.truncate(count);
        (out, more)
    }

    /// A copy without tombstones, its graph rebuilt: how deletes become real.
    pub fn compacted(&self, threads: usize) -> IndexState {
        let mut fresh = IndexState::new(self.config, self.graph.params());
        fresh.meta_indexes = self
            .meta_indexes
            .iter()
            .map(|(p, m)| {
                (
                    p.clone(),
                    MetaIndex {
                        kind: m.kind,
                        created_seq: m.created_seq,
                        entries: BTreeMap::new(),
                    },
                )
            })
            .collect();
        for slot_no in self.live.iter() {
            let slot = &self.slots[slot_no as usize];
            fresh.push_slot(slot.clone(), self.vector(slot_no));
        }
        fresh.link_from(0, threads);
        fresh.applied = self.applied.clone();
        fresh
    }

    /// Adds a slot without linking it (used by compaction and snapshots).
    fn push_slot(&mut self, slot: Slot, values: &[f32]) {
        let keys = self.indexed_keys(&slot);
        self.push_slot_with_keys(slot, values, keys);
    }

    /// Adds a live slot and its entries in the metadata indexes and
    /// namespaces, without linking it into the graph.
    fn push_slot_with_keys(&mut self, slot: Slot, values: &[f32], keys: Vec<(String, IndexKey)>) {
        let slot_no = self.slots.len() as u32;
        self.push_values(values);
        for (property, key) in keys {
            if let Some(index) = self.meta_indexes.get_mut(&property) {
                index.entries.entry(key).or_default().insert(slot_no);
            }
        }
        if let Some(ns) = &slot.namespace {
            self.namespaces
                .entry(ns.clone())
                .or_default()
                .insert(slot_no);
        }
        self.ids.insert(slot.id.clone(), slot_no);
        self.live.insert(slot_no);
        self.deleted.push(false);
        self.slots.push(slot);
    }

    /// Snapshot body (framing and checksum belong to the store).
    pub fn encode(&self, w: &mut Writer) {
        w.u64(self.applied.seq);
        w.opt_str(self.applied.mutation.as_deref());
        w.i64(self.applied.time_ms.unwrap_or(i64::MIN));
        w.u32(self.config.dimensions);
        w.u8(match self.config.metric {
            Metric::Cosine => 0,
            Metric::Euclidean => 1,
            Metric::DotProduct => 2,
        });
        w.u32(self.meta_indexes.len() as u32);
        for (p, m) in &self.meta_indexes {
            w.str(p);
            w.u8(metadata_type_code(m.kind));
            w.u64(m.created_seq);
        }
        w.u32(self.slots.len() as u32);
        for (i, slot) in self.slots.iter().enumerate() {
            w.u8(self.deleted[i] as u8);
            w.str(&slot.id);
            w.opt_str(slot.namespace.as_deref());
            w.opt_str(slot.metadata.as_deref());
            w.u64(slot.write_seq);
        }
        // Values only; inverse norms are recomputed on load.
        w.u32((self.slots.len() * self.dims) as u32);
        for slot in 0..self.slots.len() as u32 {
            for x in self.vector(slot) {
                w.buf.extend_from_slice(&x.to_le_bytes());
            }
        }
        self.graph.encode(&mut w.buf);
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Self, VectorError> {
        let corrupt = |m: &str| VectorError::Corrupt(m.to_string());
        let seq = r.u64()?;
        let mutation = r.opt_str()?;
        let time = r.i64()?;
        let dimensions = r.u32()?;
        let metric = match r.u8()? {
            0 => Metric::Cosine,
            1 => Metric::Euclidean,
            2 => Metric::DotProduct,
            _ => return Err(corrupt("unknown metric")),
        };
        let config = IndexConfig { dimensions, metric };
        let mut state = IndexState::new(config, HnswParams::default());
        state.applied = Applied {
            seq,
            mutation,
            time_ms: (time != i64::MIN).then_some(time),
        };
        for _ in 0..r.u32()? {
            let property = r.str()?;
            let kind = metadata_type_from_code(r.u8()?).ok_or_else(|| corrupt("metadata type"))?;
            let created_seq = r.u64()?;
            state.meta_indexes.insert(
                property,
                MetaIndex {
                    kind,
                    created_seq,
                    entries: BTreeMap::new(),
                },
            );
        }
        let n = r.u32()? as usize;
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            let deleted = r.u8()? != 0;
            let slot = Slot {
                id: r.str()?,
                namespace: r.opt_str()?,
                metadata: r.opt_str()?.map(String::into_boxed_str),
                write_seq: r.u64()?,
            };
            slots.push((deleted, slot));
        }
        let values = r.f32s()?;
        if values.len() != n * dimensions as usize {
            return Err(corrupt("vector data does not match the slot count"));
        }
        let graph = Hnsw::decode(&mut r.rest).ok_or_else(|| corrupt("graph"))?;
        if graph.len() != n {
            return Err(corrupt("graph does not match the slot count"));
        }
        for (i, (deleted, slot)) in slots.into_iter().enumerate() {
            let v = &values[i * dimensions as usize..(i + 1) * dimensions as usize];
            if deleted {
                state.push_values(v);
                state.deleted.push(true);
                state.slots.push(slot);
            } else {
                state.push_slot(slot, v);
            }
        }
        state.graph = graph;
        Ok(state)
    }
}

pub(crate) fn metadata_type_code(t: MetadataType) -> u8 {
    match t {
        MetadataType::String => 0,
        MetadataType::Number => 1,
        MetadataType::Boolean => 2,
    }
}

pub(crate) fn metadata_type_from_code(c: u8) -> Option<MetadataType> {
    match c {
        0 => Some(MetadataType::String),
        1 => Some(MetadataType::Number),
        2 => Some(MetadataType::Boolean),
        _ => None,
    }
}
