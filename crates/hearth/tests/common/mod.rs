//! Starting a real `hearth serve` process for tests that need a process
//! (to kill it, or to drive it with the CLI).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCOUNT: &str = "0123456789abcdef0123456789abcdef";
pub const TOKEN: &str = "process-test-token-0123456789";

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    l.local_addr().expect("addr").port()
}

/// `hearth serve` on `port` with its data in `data`; no models (the
/// default model's warm-up fails fast and only logs).
pub fn spawn_server(data: &Path, port: u16, extra_env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.arg("serve")
        .env("HEARTH_DATA_DIR", data)
        .env("HEARTH_MODELS_DIR", data.join("no-models"))
        .env("HEARTH_LISTEN", format!("127.0.0.1:{port}"))
        .env("HEARTH_ACCOUNT_ID", ACCOUNT)
        .env("HEARTH_API_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("hearth serve starts")
}

pub async fn wait_ready(client: &reqwest::Client, base: &str) {
    let start = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/health")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where `scripts/fetch-test-models` put the weights (`$HEARTH_MODELS_DIR`
/// when set).
#[allow(dead_code)] // not every test binary that includes this module serves models
pub fn models_dir() -> String {
    std::env::var("HEARTH_MODELS_DIR").unwrap_or_else(|_| {
        hearth_runtime::config::default_data_dir()
            .join("models")
            .display()
            .to_string()
    })
}

/// Runs `hearth <command> --url <server on port> ARGS` with the test
/// account's credentials: `(succeeded, stdout, stderr)`.
#[allow(dead_code)] // only the CLI tests drive the CLI
pub fn cli(command: &str, port: u16, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg(command)
        .args(["--url", &format!("http://127.0.0.1:{port}")])
        .args(args)
        .env("HEARTH_ACCOUNT_ID", ACCOUNT)
        .env("HEARTH_API_TOKEN", TOKEN)
        .output()
        .expect("hearth runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits (up to five minutes) until an AI Search instance under
/// `instances_url` has at least `at_least` jobs, none running or queued;
/// its jobs, newest first.
#[allow(dead_code)] // only the AI Search tests sync
pub async fn search_jobs_settled(
    client: &reqwest::Client,
    instances_url: &str,
    instance: &str,
    at_least: usize,
) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let jobs: serde_json::Value = client
            .get(format!("{instances_url}/{instance}/jobs"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("jobs")
            .json()
            .await
            .expect("json");
        let list = jobs["result"].as_array().cloned().unwrap_or_default();
        if list.len() >= at_least.max(1)
            && list
                .iter()
                .all(|j| j["status"] != "running" && j["status"] != "queued")
        {
            return list;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the sync of {instance} did not finish: {jobs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
