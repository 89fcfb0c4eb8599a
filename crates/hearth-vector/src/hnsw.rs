//! A hierarchical navigable small-world graph (Malkov & Yashunin, 2016) over
//! the vectors of one index.
//!
//! Links live in flat arrays of `AtomicU32` so that several threads can insert
//! at once (each takes the lock of the one node whose list it rewrites) while
//! readers walk the graph without locks; a reader that races a rewrite sees
//! either list, both of which hold valid node ids. Relaxed atomics compile to
//! plain loads, so a read-only search pays nothing for this.
//!
//! The graph knows nothing about metrics: callers hand in distance closures
//! (lower is closer) and an `accept` predicate, which is how deleted vectors
//! and metadata filters stay out of results while still serving as stepping
//! stones.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

const NO_ENTRY: u64 = u64::MAX;

/// Build parameters. `m` = links per node on upper layers (twice that on
/// layer 0), `ef_construction` = beam width while inserting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    pub m: usize,
    pub ef_construction: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        // The settings the peers were measured with (faiss/hnswlib M=16, efC=200).
        Self {
            m: 16,
            ef_construction: 200,
        }
    }
}

/// A `(distance, node)` pair ordered by distance, then node for determinism.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub dist: f32,
    pub node: u32,
}

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist
            .total_cmp(&other.dist)
            .then(self.node.cmp(&other.node))
    }
}

/// Min-heap adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Nearest(std::cmp::Reverse<Scored>);

pub struct Hnsw {
    params: HnswParams,
    m0: usize,
    level_mult: f64,
    levels: Vec<u8>,
    /// Layer 0: per node `[count, ids × m0]`.
    links0: Vec<AtomicU32>,
    /// Layers ≥ 1: per node `level × [count, ids × m]`.
    upper: Vec<Box<[AtomicU32]>>,
    locks: Vec<Mutex<()>>,
    /// `level << 32 | node`, or `NO_ENTRY`.
    entry: AtomicU64,
    entry_lock: Mutex<()>,
}

thread_local! {
    static VISITED: RefCell<Visited> = RefCell::new(Visited::default());
}

/// Generation-stamped visited marks: clearing is a counter bump, not a
/// memset (one memset per 255 searches). One byte per node keeps the table
/// in L2 for indexes of a few hundred thousand vectors.
#[derive(Default)]
struct Visited {
    marks: Vec<u8>,
    generation: u8,
}

impl Visited {
    fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.generation = 1;
        }
    }

    /// Marks `node`; true when it was not marked yet.
    #[inline]
    fn insert(&mut self, node: u32) -> bool {
        let slot = &mut self.marks[node as usize];
        if *slot == self.generation {
            false
        } else {
            *slot = self.generation;
            true
        }
    }
}

impl Hnsw {
    pub fn new(params: HnswParams) -> Self {
        let m = params.m.max(2);
        Self {
            params: HnswParams { m, ..params },
            m0: 2 * m,
            level_mult: 1.0 / (m as f64).ln(),
            levels: Vec::new(),
            links0: Vec::new(),
            upper: Vec::new(),
            locks: Vec::new(),
            entry: AtomicU64::new(NO_ENTRY),
            entry_lock: Mutex::new(()),
        }
    }

    pub fn params(&self) -> HnswParams {
        self.params
    }

    pub fn len(&self) -> usize {
        self.levels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// The level a new node gets, from a uniform draw in (0, 1].
    pub fn draw_level(&self, uniform: f64) -> u8 {
        let u = uniform.clamp(f64::MIN_POSITIVE, 1.0);
        ((-u.ln() * self.level_mult).floor() as usize).min(30) as u8
    }

    /// Makes room for nodes `len()..len()+levels.len()` with the given
    /// levels; [`Hnsw::link`] then wires each in, possibly from several threads.
    pub fn push_nodes(&mut self, levels: &[u8]) {
        let stride0 = self.m0 + 1;
        let stride = self.params.m + 1;
        self.links0
            .resize_with((self.levels.len() + levels.len()) * stride0, || {
                AtomicU32::new(0)
            });
        for &level in levels {
            self.upper.push(
                (0..level as usize * stride)
                    .map(|_| AtomicU32::new(0))
                    .collect(),
            );
            self.locks.push(Mutex::new(()));
        }
        self.levels.extend_from_slice(levels);
    }

    fn entry(&self) -> Option<(u32, u8)> {
        let e = self.entry.load(Relaxed);
        (e != NO_ENTRY).then_some((e as u32, (e >> 32) as u8))
    }

    fn list(&self, node: u32, level: u8) -> &[AtomicU32] {
        if level == 0 {
            let stride = self.m0 + 1;
            let start = node as usize * stride;
            &self.links0[start..start + stride]
        } else {
            let stride = self.params.m + 1;
            let start = (level as usize - 1) * stride;
            &self.upper[node as usize][start..start + stride]
        }
    }

    #[inline]
    fn prefetch_links(&self, node: u32, level: u8) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let list = self.list(node, level);
            let p = list.as_ptr() as *const i8;
            // SAFETY: a prefetch never faults; both lines lie within `list`
            // (a level-0 list is 33 words = 132 bytes).
            unsafe {
                _mm_prefetch(p, _MM_HINT_T0);
                if list.len() * 4 > 64 {
                    _mm_prefetch(p.add(64), _MM_HINT_T0);
                }
            }
        }
    }

    /// The current neighbours of `node` on `level` (copied: the list may be
    /// rewritten by an inserting thread meanwhile).
    fn neighbors_into(&self, node: u32, level: u8, out: &mut Vec<u32>) {
        out.clear();
        let list = self.list(node, level);
        let count = (list[0].load(Relaxed) as usize).min(list.len() - 1);
        out.extend(list[1..=count].iter().map(|a| a.load(Relaxed)));
    }

    fn write_list(&self, node: u32, level: u8, ids: &[u32]) {
        let list = self.list(node, level);
        let count = ids.len().min(list.len() - 1);
        for (slot, &id) in list[1..].iter().zip(&ids[..count]) {
            slot.store(id, Relaxed);
        }
        list[0].store(count as u32, Relaxed);
    }

    /// Beam search on one layer. Returns up to `ef` accepted nodes, closest
    /// first. Rejected nodes are still expanded, so a filter cannot cut the
    /// graph into unreachable pieces.
    #[allow(clippy::too_many_arguments)]
    fn search_layer<D, A, P>(
        &self,
        distance: &D,
        accept: &A,
        prefetch: &P,
        entries: &[Scored],
        ef: usize,
        level: u8,
        visited: &mut Visited,
        scratch: &mut Vec<u32>,
    ) -> Vec<Scored>
    where
        D: Fn(u32) -> f32,
        A: Fn(u32) -> bool,
        P: Fn(u32),
    {
        let mut fresh: Vec<u32> = Vec::with_capacity(self.m0);
        let mut candidates: BinaryHeap<Nearest> = BinaryHeap::with_capacity(ef * 2);
        let mut results: BinaryHeap<Scored> = BinaryHeap::with_capacity(ef + 1);
        for &e in entries {
            if visited.insert(e.node) {
                candidates.push(Nearest(std::cmp::Reverse(e)));
                if accept(e.node) {
                    results.push(e);
                }
            }
        }
        while results.len() > ef {
            results.pop();
        }
        while let Some(Nearest(std::cmp::Reverse(current))) = candidates.pop() {
            if results.len() >= ef
                && let Some(worst) = results.peek()
                && current.dist > worst.dist
            {
                break;
            }
            // The next candidate's link list is a cache miss away; start it
            // now, while this candidate's neighbours are scored.
            if let Some(Nearest(std::cmp::Reverse(next))) = candidates.peek() {
                self.prefetch_links(next.node, level);
            }
            self.neighbors_into(current.node, level, scratch);
            fresh.clear();
            fresh.extend(scratch.iter().copied().filter(|&n| visited.insert(n)));
            // The vectors are far apart in memory: ask for the next one
            // while computing this one's distance.
            if let Some(&first) = fresh.first() {
                prefetch(first);
            }
            for (i, &next) in fresh.iter().enumerate() {
                if let Some(&after) = fresh.get(i + 1) {
                    prefetch(after);
                }
                let dist = distance(next);
                let full = results.len() >= ef;
                let worst = results.peek().map_or(f32::INFINITY, |w| w.dist);
                if !full || dist < worst {
                    let s = Scored { dist, node: next };
                    candidates.push(Nearest(std::cmp::Reverse(s)));
                    if accept(next) {
                        results.push(s);
                        if results.len() > ef {
                            results.pop();
                        }
                    }
                }
            }
        }
        let mut out = results.into_vec();
        out.sort_unstable();
        out
    }

    /// Greedy descent from the entry point to `stop_level + 1`.
    fn descend<D: Fn(u32) -> f32>(
        &self,
        distance: &D,
        stop_level: u8,
        scratch: &mut Vec<u32>,
    ) -> Option<Scored> {
        let (node, top) = self.entry()?;
        let mut best = Scored {
            dist: distance(node),
            node,
        };
        let mut level = top;
        while level > stop_level {
            let mut changed = true;
            while changed {
                changed = false;
                self.neighbors_into(best.node, level, scratch);
                for &next in scratch.iter() {
                    let d = distance(next);
                    if d < best.dist {
                        best = Scored {
                            dist: d,
                            node: next,
                        };
                        changed = true;
                    }
                }
            }
            level -= 1;
        }
        Some(best)
    }

    /// The `k` accepted nodes nearest by `distance`, searching with beam `ef`.
    pub fn search<D, A, P>(
        &self,
        distance: D,
        accept: A,
        prefetch: P,
        k: usize,
        ef: usize,
    ) -> Vec<Scored>
    where
        D: Fn(u32) -> f32,
        A: Fn(u32) -> bool,
        P: Fn(u32),
    {
        let mut scratch = Vec::with_capacity(self.m0);
        let Some(start) = self.descend(&distance, 0, &mut scratch) else {
            return Vec::new();
        };
        VISITED.with(|v| {
            let mut visited = v.borrow_mut();
            visited.reset(self.len());
            let mut found = self.search_layer(
                &distance,
                &accept,
                &prefetch,
                &[start],
                ef.max(k),
                0,
                &mut visited,
                &mut scratch,
            );
            found.truncate(k);
            found
        })
    }

    /// Keeps candidates (closest first) that are closer to the base than to
    /// any neighbour already kept: the diversity heuristic that keeps the
    /// graph navigable across clusters.
    fn select<N: Fn(u32, u32) -> f32>(between: &N, candidates: &[Scored], m: usize) -> Vec<u32> {
        let mut kept: Vec<u32> = Vec::with_capacity(m);
        for c in candidates {
            if kept.len() >= m {
                break;
            }
            if kept.iter().all(|&r| between(c.node, r) > c.dist) {
                kept.push(c.node);
            }
        }
        kept
    }

    /// Wires `node` (already pushed) into the graph. `between(a, b)` is the
    /// distance of two stored nodes. Safe to call from several threads for
    /// different nodes.
    pub fn link<N: Fn(u32, u32) -> f32, P: Fn(u32)>(&self, node: u32, between: &N, prefetch: &P) {
        let level = self.levels[node as usize];
        let distance = |other: u32| between(node, other);
        // The first node, or a racing first node: become the entry point.
        if self.entry().is_none() {
            let _guard = self.entry_lock.lock().unwrap_or_else(|e| e.into_inner());
            if self.entry().is_none() {
                self.entry
                    .store(((level as u64) << 32) | node as u64, Relaxed);
                return;
            }
        }
        let Some((_, top)) = self.entry() else {
            return;
        };
        let mut scratch = Vec::with_capacity(self.m0);
        let Some(start) = self.descend(&distance, level, &mut scratch) else {
            return;
        };
        let mut entries = vec![start];
        VISITED.with(|v| {
            let mut visited = v.borrow_mut();
            for lc in (0..=level.min(top)).rev() {
                visited.reset(self.len());
                let found = self.search_layer(
                    &distance,
                    &|n| n != node,
                    prefetch,
                    &entries,
                    self.params.ef_construction,
                    lc,
                    &mut visited,
                    &mut scratch,
                );
                let chosen = Self::select(between, &found, self.params.m);
                {
                    let _guard = self.locks[node as usize]
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    self.write_list(node, lc, &chosen);
                }
                let max = if lc == 0 { self.m0 } else { self.params.m };
                for &neighbor in &chosen {
                    let _guard = self.locks[neighbor as usize]
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    self.neighbors_into(neighbor, lc, &mut scratch);
                    if scratch.contains(&node) {
                        continue;
                    }
                    if scratch.len() < max {
                        scratch.push(node);
                        self.write_list(neighbor, lc, &scratch);
                    } else {
                        let mut pool: Vec<Scored> = scratch
                            .iter()
                            .chain(std::iter::once(&node))
                            .map(|&n| Scored {
                                dist: between(neighbor, n),
                                node: n,
                            })
                            .collect();
                        pool.sort_unstable();
                        let pruned = Self::select(between, &pool, max);
                        self.write_list(neighbor, lc, &pruned);
                    }
                }
                if !found.is_empty() {
                    entries = found;
                }
            }
        });
        if level > top {
            let _guard = self.entry_lock.lock().unwrap_or_else(|e| e.into_inner());
            if self.entry().is_none_or(|(_, t)| level > t) {
                self.entry
                    .store(((level as u64) << 32) | node as u64, Relaxed);
            }
        }
    }

    /// Links nodes `from..len()` using up to `threads` threads.
    pub fn link_range<N, P>(&self, from: usize, between: &N, prefetch: &P, threads: usize)
    where
        N: Fn(u32, u32) -> f32 + Sync,
        P: Fn(u32) + Sync,
    {
        let total = self.len();
        if from >= total {
            return;
        }
        // The first node sets the entry point; the rest may race safely.
        let mut start = from;
        if self.entry().is_none() {
            self.link(start as u32, between, prefetch);
            start += 1;
        }
        let next = AtomicUsize::new(start);
        let threads = threads.clamp(1, 64).min(total - start).max(1);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Relaxed);
                        if i >= total {
                            break;
                        }
                        self.link(i as u32, between, prefetch);
                    }
                });
            }
        });
    }

    /// Serializes the graph for a snapshot.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let put = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
        put(out, self.params.m as u32);
        put(out, self.params.ef_construction as u32);
        out.extend_from_slice(&self.entry.load(Relaxed).to_le_bytes());
        put(out, self.levels.len() as u32);
        out.extend_from_slice(&self.levels);
        for a in &self.links0 {
            put(out, a.load(Relaxed));
        }
        for node in &self.upper {
            for a in node.iter() {
                put(out, a.load(Relaxed));
            }
        }
    }

    /// Reads what [`Hnsw::encode`] wrote; `None` when it does not fit.
    pub fn decode(bytes: &mut &[u8]) -> Option<Self> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            if bytes.len() < n {
                return None;
            }
            let (head, tail) = bytes.split_at(n);
            *bytes = tail;
            Some(head)
        }
        fn u32_of(bytes: &mut &[u8]) -> Option<u32> {
            Some(u32::from_le_bytes(take(bytes, 4)?.try_into().ok()?))
        }
        let m = u32_of(bytes)? as usize;
        let ef_construction = u32_of(bytes)? as usize;
        let entry = u64::from_le_bytes(take(bytes, 8)?.try_into().ok()?);
        let n = u32_of(bytes)? as usize;
        let mut graph = Hnsw::new(HnswParams { m, ef_construction });
        let levels = take(bytes, n)?.to_vec();
        graph.push_nodes(&levels);
        for a in &graph.links0 {
            a.store(u32_of(bytes)?, Relaxed);
        }
        for node in &graph.upper {
            for a in node.iter() {
                a.store(u32_of(bytes)?, Relaxed);
            }
        }
        // Every stored id must name a node, or a later search would index
        // out of bounds.
        let valid = |a: &AtomicU32, count: bool| count || (a.load(Relaxed) as usize) < n;
        let stride0 = graph.m0 + 1;
        if graph
            .links0
            .iter()
            .enumerate()
            .any(|(i, a)| !valid(a, i % stride0 == 0))
        {
            return None;
        }
        let stride = graph.params.m + 1;
        if graph.upper.iter().any(|node| {
            node.iter()
                .enumerate()
                .any(|(i, a)| !valid(a, i % stride == 0))
        }) {
            return None;
        }
        if entry != NO_ENTRY && (entry as u32 as usize) >= n {
            return None;
        }
        graph.entry.store(entry, Relaxed);
        Some(graph)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_unit(rng: &mut impl Rng, n: usize, d: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| {
                let v: Vec<f32> = (0..d).map(|_| rng.random::<f32>() - 0.5).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect()
    }

    #[test]
    fn finds_true_neighbours_and_round_trips_through_encode() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let data = random_unit(&mut rng, 2000, 32);
        let mut graph = Hnsw::new(HnswParams::default());
        let levels: Vec<u8> = (0..data.len())
            .map(|_| graph.draw_level(1.0 - rng.random::<f64>()))
            .collect();
        graph.push_nodes(&levels);
        let between =
            |a: u32, b: u32| crate::distance::l2_squared(&data[a as usize], &data[b as usize]);
        graph.link_range(0, &between, &|_| {}, 2);
        let queries = random_unit(&mut rng, 50, 32);
        let mut hits = 0;
        for q in &queries {
            let dist = |n: u32| crate::distance::l2_squared(q, &data[n as usize]);
            let found: Vec<u32> = graph
                .search(dist, |_| true, |_| {}, 10, 64)
                .iter()
                .map(|s| s.node)
                .collect();
            let mut exact: Vec<Scored> = (0..data.len() as u32)
                .map(|n| Scored {
                    dist: dist(n),
                    node: n,
                })
                .collect();
            exact.sort_unstable();
            hits += exact[..10]
                .iter()
                .filter(|s| found.contains(&s.node))
                .count();
        }
        let recall = hits as f64 / 500.0;
        assert!(recall >= 0.95, "recall {recall}");

        let mut bytes = Vec::new();
        graph.encode(&mut bytes);
        let copy = Hnsw::decode(&mut bytes.as_slice()).expect("decodes");
        let q = &queries[0];
        let dist = |n: u32| crate::distance::l2_squared(q, &data[n as usize]);
        assert_eq!(
            graph.search(dist, |_| true, |_| {}, 10, 64),
            copy.search(dist, |_| true, |_| {}, 10, 64)
        );
        assert!(Hnsw::decode(&mut &bytes[..bytes.len() - 3]).is_none());
    }
}
