//! Hearth's vector index on the peers' data set (`shared/bench/vectors_peers.py
//! --dump-dir DIR`): build time and memory, queries/second with one thread and
//! recall@k per ef, the 1%-filtered scenario, and the write path (log append
//! and apply rates through the durable store).
//!
//! cargo run --release -p hearth-vector --example vector_bench -- DIR [build threads] [ef list]

use std::time::{Duration, Instant};

use hearth_types::vectorize::{
    CreateIndexRequest, IndexConfig, IndexConfigRequest, MetadataType, Metric, ReturnMetadata,
};
use hearth_vector::{
    Filter, HnswParams, IndexState, QueryOptions, Record, Vectorize, VectorizeOptions,
};
use serde_json::json;

/// A little-endian `.npy` of `<f4` or `<i8`, two dimensions.
fn load_npy(path: &std::path::Path) -> (Vec<u8>, String, usize, usize) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "not an npy file");
    let (header_len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).expect("header");
    let descr = header
        .split("'descr': '")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("descr")
        .to_string();
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("shape");
    let dims: Vec<usize> = shape
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    assert!(header.contains("'fortran_order': False"));
    (
        bytes[start + header_len..].to_vec(),
        descr,
        dims[0],
        dims.get(1).copied().unwrap_or(1),
    )
}

fn f32_rows(path: &std::path::Path) -> (Vec<f32>, usize, usize) {
    let (data, descr, n, d) = load_npy(path);
    assert_eq!(descr, "<f4");
    (
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        n,
        d,
    )
}

fn i64_rows(path: &std::path::Path) -> (Vec<i64>, usize, usize) {
    let (data, descr, n, d) = load_npy(path);
    assert_eq!(descr, "<i8");
    (
        data.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        n,
        d,
    )
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(
        args.get(1)
            .expect("usage: vector_bench DIR [threads] [ef,ef,..]"),
    );
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let efs: Vec<usize> = args
        .get(3)
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 20, 40, 80, 160, 320]);
    let reps = 5;
    let k = 10;
    let (base, n, dims) = f32_rows(&dir.join("base.npy"));
    let (queries, nq, qd) = f32_rows(&dir.join("queries.npy"));
    assert_eq!(dims, qd);
    let (gt, _, gt_k) = i64_rows(&dir.join("gt.npy"));
    eprintln!("data {n} x {dims}, {nq} queries");

    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            id: i.to_string(),
            values: base[i * dims..(i + 1) * dims].to_vec(),
            namespace: None,
            metadata: json!({"keep": i % 100 == 0}).as_object().cloned(),
        })
        .collect();
    let config = IndexConfig {
        dimensions: dims as u32,
        metric: Metric::Cosine,
    };
    let rss0 = rss_bytes();
    let t = Instant::now();
    // HEARTH_BENCH_GRAPH=FILE reuses a built index across runs (query work only).
    let cache = std::env::var_os("HEARTH_BENCH_GRAPH").map(std::path::PathBuf::from);
    let state = match cache.as_ref().and_then(|p| std::fs::read(p).ok()) {
        Some(bytes) => {
            let mut r = hearth_vector::codec::Reader::new(&bytes);
            IndexState::decode(&mut r).expect("cached index decodes")
        }
        None => {
            let mut state = IndexState::new(config, HnswParams::default());
            state.create_metadata_index("keep", MetadataType::Boolean, 0);
            state.write(&records, false, 1, threads);
            if let Some(p) = &cache {
                let mut w = hearth_vector::codec::Writer::default();
                state.encode(&mut w);
                std::fs::write(p, &w.buf).expect("cache written");
            }
            state
        }
    };
    let build_s = t.elapsed().as_secs_f64();
    let rss_mib = (rss_bytes().saturating_sub(rss0)) as f64 / (1 << 20) as f64;
    println!(
        "{}",
        json!({"build": {"threads": threads, "seconds": build_s, "rss_delta_mib": rss_mib, "vectors_mib": (n * dims * 4) as f64 / (1 << 20) as f64}})
    );

    let options = |ef: usize, filter: Option<Filter>| QueryOptions {
        top_k: k,
        namespace: None,
        filter,
        return_values: false,
        return_metadata: ReturnMetadata::None,
        ef,
    };
    for &ef in &efs {
        let opts = options(ef, None);
        let mut times = Vec::new();
        let mut hits = 0;
        for rep in 0..reps {
            let t = Instant::now();
            for q in 0..nq {
                let found = state.query(&queries[q * dims..(q + 1) * dims], &opts);
                if rep == 0 {
                    let truth = &gt[q * gt_k..q * gt_k + k];
                    hits += found
                        .iter()
                        .filter(|m| truth.contains(&m.id.parse::<i64>().unwrap_or(-1)))
                        .count();
                }
            }
            times.push(nq as f64 / t.elapsed().as_secs_f64());
        }
        let recall = hits as f64 / (nq * k) as f64;
        println!(
            "{}",
            json!({"ef": ef, "recall": recall, "qps_1t": median(times.clone()), "qps_min": times.iter().cloned().fold(f64::INFINITY, f64::min), "qps_max": times.iter().cloned().fold(0.0, f64::max)})
        );
    }

    // Filtered: keep id % 100 == 0, the first 200 queries, truth by exact scan.
    let fq = nq.min(200);
    let kept: Vec<usize> = (0..n).step_by(100).collect();
    let truth: Vec<Vec<String>> = (0..fq)
        .map(|q| {
            let query = &queries[q * dims..(q + 1) * dims];
            let mut s: Vec<(f32, usize)> = kept
                .iter()
                .map(|&i| {
                    (
                        -base[i * dims..(i + 1) * dims]
                            .iter()
                            .zip(query)
                            .map(|(a, b)| a * b)
                            .sum::<f32>(),
                        i,
                    )
                })
                .collect();
            s.sort_by(|a, b| a.0.total_cmp(&b.0));
            s[..k].iter().map(|(_, i)| i.to_string()).collect()
        })
        .collect();
    let filter = Filter::parse(&json!({"keep": true})).expect("filter");
    let opts = options(100, Some(filter));
    let mut times = Vec::new();
    let mut hits = 0;
    for rep in 0..reps {
        let t = Instant::now();
        for (q, truth) in truth.iter().enumerate() {
            let found = state.query(&queries[q * dims..(q + 1) * dims], &opts);
            if rep == 0 {
                hits += found.iter().filter(|m| truth.contains(&m.id)).count();
            }
        }
        times.push(fq as f64 / t.elapsed().as_secs_f64());
    }
    println!(
        "{}",
        json!({"filtered_1pct": {"recall": hits as f64 / (fq * k) as f64, "qps_1t": median(times)}})
    );
    drop(state);

    // The durable write path: acknowledged (logged + fsynced) and applied rates.
    let tmp = std::env::temp_dir().join(format!("hearth-vector-bench-{}", std::process::id()));
    let store = Vectorize::open(
        &tmp,
        VectorizeOptions {
            build_threads: threads,
            ..VectorizeOptions::default()
        },
    )
    .expect("store");
    store
        .create(
            "bench",
            CreateIndexRequest {
                name: "bench".into(),
                description: None,
                config: IndexConfigRequest {
                    dimensions: Some(dims as i64),
                    metric: Some("cosine".into()),
                    preset: None,
                },
            },
        )
        .expect("create");
    let handle = store.get("bench", "bench").expect("index");
    let t = Instant::now();
    for chunk in records.chunks(5000) {
        handle.insert(chunk.to_vec()).expect("insert");
    }
    let acked_s = t.elapsed().as_secs_f64();
    while !handle.is_caught_up() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let applied_s = t.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"writes": {"vectors": n, "acknowledged_per_s": n as f64 / acked_s, "applied_per_s": n as f64 / applied_s}})
    );
    drop(handle);
    drop(store);
    let _ = std::fs::remove_dir_all(&tmp);
}
