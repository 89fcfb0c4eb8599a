//! Crash safety of Vectorize writes: a writer upserts and deletes in a loop
//! while `hearth serve` is killed with SIGKILL at random moments, 20 times.
//! After each restart every acknowledged mutation is present, and a write
//! that was in flight at the kill is either wholly applied or wholly absent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

mod common;
use common::{ACCOUNT, TOKEN, free_port, spawn_server, wait_ready};

// Snapshot (and compact) every few writes, so kills land mid-snapshot too.
const ENV: &[(&str, &str)] = &[("HEARTH_VECTORIZE_SNAPSHOT_AFTER_BYTES", "20000")];
const BATCH: usize = 40;
const DIMS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    /// The server answered with a mutation id.
    Acked,
    /// The request was in flight when the server died.
    InFlight,
}

#[derive(Debug, Default, Clone)]
struct Ledger {
    /// batch number → fate of its upsert
    upserts: BTreeMap<usize, Fate>,
    /// batch number whose ids were deleted → fate of the delete
    deletes: BTreeMap<usize, Fate>,
}

fn values(batch: usize, j: usize) -> Vec<f32> {
    (0..DIMS)
        .map(|d| ((batch * 31 + j * 7 + d) % 97) as f32 / 97.0 + 0.01)
        .collect()
}

fn ids(batch: usize) -> Vec<String> {
    (0..BATCH).map(|j| format!("b{batch}-{j}")).collect()
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<String>,
) -> Result<Value, String> {
    let mut req = client
        .request(method, url)
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(30));
    if let Some(b) = body {
        req = req.header("content-type", "application/x-ndjson").body(b);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let v: Value = resp.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {v}"));
    }
    Ok(v)
}

async fn writer(
    client: reqwest::Client,
    base: String,
    ledger: Arc<Mutex<Ledger>>,
    start_batch: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> usize {
    let index = format!("{base}/client/v4/accounts/{ACCOUNT}/vectorize/v2/indexes/crash");
    let mut batch = start_batch;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let body: String = (0..BATCH)
            .map(|j| format!("{}\n", json!({"id": format!("b{batch}-{j}"), "values": values(batch, j), "metadata": {"batch": batch}})))
            .collect();
        ledger.lock().unwrap().upserts.insert(batch, Fate::InFlight);
        match call(
            &client,
            reqwest::Method::POST,
            format!("{index}/upsert"),
            Some(body),
        )
        .await
        {
            Ok(_) => {
                ledger.lock().unwrap().upserts.insert(batch, Fate::Acked);
            }
            Err(_) => return batch + 1,
        }
        // Every third batch, delete an earlier acknowledged batch.
        if batch % 3 == 2 && batch >= 3 {
            let victim = batch - 2;
            if ledger.lock().unwrap().upserts.get(&victim) == Some(&Fate::Acked) {
                ledger
                    .lock()
                    .unwrap()
                    .deletes
                    .insert(victim, Fate::InFlight);
                let body = json!({"ids": ids(victim)}).to_string();
                let resp = client
                    .post(format!("{index}/delete_by_ids"))
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().is_success() => {
                        ledger.lock().unwrap().deletes.insert(victim, Fate::Acked);
                    }
                    _ => return batch + 1,
                }
            }
        }
        batch += 1;
    }
    batch
}

async fn verify(client: &reqwest::Client, base: &str, ledger: &Ledger) {
    let index = format!("{base}/client/v4/accounts/{ACCOUNT}/vectorize/v2/indexes/crash");
    // A fresh write, applied, means everything logged before it is applied.
    let marker = call(
        client,
        reqwest::Method::POST,
        format!("{index}/upsert"),
        Some(format!(
            "{}\n",
            json!({"id": "marker", "values": vec![1.0; DIMS]})
        )),
    )
    .await
    .expect("marker write");
    let marker_id = marker["result"]["mutationId"]
        .as_str()
        .expect("id")
        .to_string();
    let start = Instant::now();
    loop {
        let info = call(client, reqwest::Method::GET, format!("{index}/info"), None)
            .await
            .expect("info");
        if info["result"]["processedUpToMutation"] == marker_id.as_str() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "recovery did not catch up: {info}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut expected_count = 1; // the marker
    for (&batch, &fate) in &ledger.upserts {
        let got = client
            .post(format!("{index}/get_by_ids"))
            .bearer_auth(TOKEN)
            .json(&json!({"ids": ids(batch)}))
            .send()
            .await
            .expect("get_by_ids");
        let got: Value = got.json().await.expect("json");
        let found = got["result"].as_array().expect("array");
        let delete = ledger.deletes.get(&batch).copied();
        let present = found.len();
        assert!(
            present == 0 || present == BATCH,
            "batch {batch} is half applied: {present} of {BATCH}"
        );
        match (fate, delete) {
            (Fate::Acked, None) => {
                assert_eq!(present, BATCH, "acknowledged batch {batch} lost");
                for v in found {
                    let j: usize = v["id"]
                        .as_str()
                        .unwrap()
                        .rsplit('-')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                    let stored: Vec<f32> = serde_json::from_value(v["values"].clone()).unwrap();
                    assert_eq!(stored, values(batch, j), "batch {batch} vector {j} changed");
                }
            }
            (Fate::Acked, Some(Fate::Acked)) => {
                assert_eq!(present, 0, "acknowledged delete of batch {batch} lost")
            }
            _ => {}
        }
        expected_count += present;
    }
    let info = call(client, reqwest::Method::GET, format!("{index}/info"), None)
        .await
        .expect("info");
    assert_eq!(info["result"]["vectorCount"], expected_count, "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut child = spawn_server(data.path(), port, ENV);
    wait_ready(&client, &base).await;
    let create = client
        .post(format!(
            "{base}/client/v4/accounts/{ACCOUNT}/vectorize/v2/indexes"
        ))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "crash", "config": {"dimensions": DIMS, "metric": "cosine"}}))
        .send()
        .await
        .expect("create");
    assert_eq!(create.status(), 201);

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut next_batch = 0;
    for round in 0..20 {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn(writer(
            client.clone(),
            base.clone(),
            Arc::clone(&ledger),
            next_batch,
            Arc::clone(&stop),
        ));
        tokio::time::sleep(Duration::from_millis(rng.random_range(30..400))).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        next_batch = task.await.expect("writer");
        child = spawn_server(data.path(), port, ENV);
        wait_ready(&client, &base).await;
        let snapshot = ledger.lock().unwrap().clone();
        verify(&client, &base, &snapshot).await;
        eprintln!(
            "round {round}: {} batches written, {} acknowledged",
            snapshot.upserts.len(),
            snapshot
                .upserts
                .values()
                .filter(|f| **f == Fate::Acked)
                .count()
        );
    }
    child.kill().ok();
    child.wait().ok();
    let ledger = ledger.lock().unwrap();
    assert!(
        ledger
            .upserts
            .values()
            .filter(|f| **f == Fate::Acked)
            .count()
            >= 40,
        "the writer barely wrote: {ledger:?}"
    );
}
