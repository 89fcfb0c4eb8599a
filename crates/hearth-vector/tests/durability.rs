//! Reopening a store: the log replays onto the snapshot, a torn tail is cut
//! off, deletes survive compaction, and a deleted index's name is free.

use std::time::{Duration, Instant};

use hearth_types::vectorize::{
    CreateIndexRequest, IndexConfigRequest, MetadataType, ReturnMetadata,
};
use hearth_vector::{Filter, QueryOptions, Record, Vectorize, VectorizeOptions};
use serde_json::json;

fn options(snapshot_after_bytes: u64) -> VectorizeOptions {
    VectorizeOptions {
        build_threads: 2,
        snapshot_after_bytes,
        ..VectorizeOptions::default()
    }
}

fn create(store: &Vectorize, name: &str) {
    store
        .create(
            "acct",
            CreateIndexRequest {
                name: name.into(),
                description: None,
                config: IndexConfigRequest {
                    dimensions: Some(4),
                    metric: Some("cosine".into()),
                    preset: None,
                },
            },
        )
        .expect("index created");
}

fn records(from: usize, to: usize) -> Vec<Record> {
    (from..to)
        .map(|i| Record {
            id: format!("v{i}"),
            values: vec![i as f32, 1.0, (i % 7) as f32, 0.5],
            namespace: (i % 2 == 0).then(|| "even".to_string()),
            metadata: json!({"n": i as f64}).as_object().cloned(),
        })
        .collect()
}

fn wait(store: &Vectorize, name: &str) {
    let handle = store.get("acct", name).expect("index exists");
    let start = Instant::now();
    while !handle.is_caught_up() {
        assert!(start.elapsed() < Duration::from_secs(30), "applier stalled");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn query_ns(store: &Vectorize, name: &str, ns: &str) -> usize {
    let handle = store.get("acct", name).expect("index exists");
    handle
        .query(
            &[1.0, 1.0, 1.0, 1.0],
            &QueryOptions {
                top_k: 100,
                namespace: Some(ns.into()),
                filter: None,
                return_values: false,
                return_metadata: ReturnMetadata::None,
                ef: 100,
            },
        )
        .len()
}

#[test]
fn log_replays_onto_snapshots_and_survives_torn_tails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("vectorize");
    {
        // A tiny threshold: every mutation triggers a snapshot + compaction check.
        let store = Vectorize::open(&root, options(1)).expect("open");
        create(&store, "idx");
        let h = store.get("acct", "idx").expect("index");
        h.insert(records(0, 50)).expect("insert");
        h.create_metadata_index("n".into(), MetadataType::Number)
            .expect("meta index");
        h.upsert(records(50, 80)).expect("upsert");
        h.delete_by_ids((0..30).map(|i| format!("v{i}")).collect())
            .expect("delete");
        wait(&store, "idx");
        assert!(root.join("acct/idx/snapshot.bin").exists());
    }
    {
        // A huge threshold: what follows lives only in the log.
        let store = Vectorize::open(&root, options(u64::MAX)).expect("reopen");
        wait(&store, "idx");
        let h = store.get("acct", "idx").expect("index");
        assert_eq!(h.info().vector_count, 50);
        h.insert(records(80, 100)).expect("insert");
        h.delete_by_ids(vec!["v30".into()]).expect("delete");
        wait(&store, "idx");
    }
    // A write that was cut mid-record: garbage at the tail of the newest segment.
    let wal = root.join("acct/idx/wal");
    let mut segs: Vec<_> = std::fs::read_dir(&wal)
        .expect("wal")
        .map(|e| e.expect("entry").path())
        .collect();
    segs.sort();
    let last = segs.last().expect("a segment").clone();
    let mut bytes = std::fs::read(&last).expect("read");
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&last, bytes).expect("write");

    let store = Vectorize::open(&root, options(u64::MAX)).expect("reopen after torn tail");
    wait(&store, "idx");
    let h = store.get("acct", "idx").expect("index");
    let info = h.info();
    assert_eq!(info.vector_count, 69, "{info:?}");
    assert!(info.processed_up_to_mutation.is_some());
    let got = h
        .get_by_ids(&["v31".into(), "v30".into(), "v99".into()])
        .expect("get");
    let ids: Vec<&str> = got.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, ["v31", "v99"]);
    assert_eq!(got[1].values, vec![99.0, 1.0, 1.0, 0.5]);
    assert_eq!(query_ns(&store, "idx", "even"), 34);
    // v31..v49 were written before the metadata index existed: not filterable.
    let f = Filter::parse(&json!({"n": {"$gte": 0}})).expect("filter");
    let filtered = h.query(
        &[1.0, 1.0, 1.0, 1.0],
        &QueryOptions {
            top_k: 100,
            namespace: None,
            filter: Some(f),
            return_values: false,
            return_metadata: ReturnMetadata::Indexed,
            ef: 100,
        },
    );
    assert_eq!(
        filtered.len(),
        50,
        "only vectors written after the metadata index"
    );
    assert!(
        filtered
            .iter()
            .all(|m| m.metadata.as_ref().is_some_and(|md| md.contains_key("n")))
    );
    // After the torn tail, writes keep working and land in a fresh segment.
    h.insert(records(100, 101)).expect("insert after recovery");
    wait(&store, "idx");
    assert_eq!(h.info().vector_count, 70);

    store.delete("acct", "idx").expect("delete index");
    assert!(store.get("acct", "idx").is_err());
    create(&store, "idx");
    assert_eq!(
        store
            .get("acct", "idx")
            .expect("recreated")
            .info()
            .vector_count,
        0
    );
}
