//! `hearth search ...`: AI Search instances of a running server from the
//! terminal. `create` and `sync` follow the indexing job with a progress
//! bar fed by the job's log; `query` prints the best chunks, or with
//! `--answer` a cited answer and its sources.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Subcommand;
use hearth_runtime::Config;
use serde_json::{Value, json};

use crate::api_client::{Client, Connection};

#[derive(Subcommand)]
pub enum SearchCommand {
    /// Create an instance over a folder and index it.
    Create {
        id: String,
        /// The folder to index.
        #[arg(long)]
        source: PathBuf,
        /// Embedding model (default: the server's, @cf/baai/bge-m3).
        #[arg(long)]
        embedding_model: Option<String>,
        /// Tokens per chunk (64-512).
        #[arg(long)]
        chunk_size: Option<u32>,
        /// Overlap between chunks, percent (0-30).
        #[arg(long)]
        chunk_overlap: Option<u32>,
        /// Index keywords too (BM25), for keyword and hybrid search.
        #[arg(long)]
        hybrid: bool,
        /// Return once the instance exists, without following its first sync.
        #[arg(long)]
        no_wait: bool,
    },
    /// Index what changed in an instance's source.
    Sync {
        id: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Search an instance, or answer from it.
    Query {
        id: String,
        query: String,
        /// Generate a cited answer from the chunks found.
        #[arg(long)]
        answer: bool,
        /// vector, keyword or hybrid (default: what the instance indexes).
        #[arg(long)]
        mode: Option<String>,
        #[arg(long, default_value_t = 5)]
        max_results: u32,
        /// Minimum score, 0-1.
        #[arg(long)]
        threshold: Option<f64>,
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
    },
    /// The account's instances.
    List,
    /// Delete an instance and its index.
    Delete { id: String },
}

pub async fn run(config: Config, conn: Connection, command: SearchCommand) -> Result<()> {
    let client = Client::new(&config, conn, "/ai-search/instances")?;
    match command {
        SearchCommand::Create {
            id,
            source,
            embedding_model,
            chunk_size,
            chunk_overlap,
            hybrid,
            no_wait,
        } => {
            let source = std::fs::canonicalize(&source)
                .map_err(|e| anyhow::anyhow!("{}: {e}", source.display()))?;
            let mut body = json!({"id": id, "type": "local", "source": source,
                "index_method": {"vector": true, "keyword": hybrid}});
            if let Some(m) = embedding_model {
                body["embedding_model"] = json!(m);
            }
            if let Some(n) = chunk_size {
                body["chunk_size"] = json!(n);
            }
            if let Some(n) = chunk_overlap {
                body["chunk_overlap"] = json!(n);
            }
            client.post_json("", &body).await?;
            eprintln!("created instance {id}");
            if no_wait {
                return Ok(());
            }
            let jobs = client.get(&format!("/{id}/jobs")).await?;
            let job = jobs[0]["id"].as_str().unwrap_or_default().to_string();
            follow(&client, &id, &job).await
        }
        SearchCommand::Sync { id, no_wait } => {
            let job = client.post_json(&format!("/{id}/jobs"), &json!({})).await?;
            let job = job["id"].as_str().unwrap_or_default().to_string();
            eprintln!("sync job {job}");
            if no_wait {
                return Ok(());
            }
            follow(&client, &id, &job).await
        }
        SearchCommand::Query {
            id,
            query,
            answer,
            mode,
            max_results,
            threshold,
            json,
        } => {
            let mut retrieval = json!({"max_num_results": max_results});
            if let Some(m) = mode {
                retrieval["retrieval_type"] = json!(m);
            }
            if let Some(t) = threshold {
                retrieval["match_threshold"] = json!(t);
            }
            let options = json!({"retrieval": retrieval});
            if answer {
                let body = json!({"messages": [{"role": "user", "content": query}],
                                  "ai_search_options": options});
                let out = client
                    .http
                    .post(format!("{}/{id}/chat/completions", client.base))
                    .json(&body);
                let out = client.send_raw(out).await?;
                if json {
                    return print(&out);
                }
                println!(
                    "{}",
                    out["choices"][0]["message"]["content"]
                        .as_str()
                        .unwrap_or_default()
                        .trim()
                );
                print_sources(&out["chunks"]);
                return Ok(());
            }
            let out = client
                .post_json(
                    &format!("/{id}/search"),
                    &json!({"query": query, "ai_search_options": options}),
                )
                .await?;
            if json {
                return print(&out);
            }
            print_sources(&out["chunks"]);
            Ok(())
        }
        SearchCommand::List => print(&client.get("").await?),
        SearchCommand::Delete { id } => {
            client
                .send(client.http.delete(format!("{}/{id}", client.base)))
                .await?;
            eprintln!("deleted instance {id}");
            Ok(())
        }
    }
}

fn print(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn print_sources(chunks: &Value) {
    let Some(chunks) = chunks.as_array() else {
        return;
    };
    if chunks.is_empty() {
        println!("(no chunk passed the threshold)");
    }
    for (i, c) in chunks.iter().enumerate() {
        let text: String = c["text"]
            .as_str()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let snippet: String = text.chars().take(160).collect();
        println!(
            "[{}] {} (score {:.3})\n    {snippet}",
            i + 1,
            c["item"]["key"].as_str().unwrap_or("?"),
            c["score"].as_f64().unwrap_or(0.0)
        );
    }
}

/// Follows a job to its end with a progress bar: the job's first log line
/// says how many files it will touch, then one line per file.
async fn follow(client: &Client, id: &str, job: &str) -> Result<()> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} files  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        let state = client.get(&format!("/{id}/jobs/{job}")).await?;
        let logs = client.get(&format!("/{id}/jobs/{job}/logs")).await?;
        let lines: Vec<&Value> = logs
            .as_array()
            .map(|l| l.iter().collect())
            .unwrap_or_default();
        if let Some(plan) = lines.first().and_then(|l| l["message"].as_str()) {
            let count = |word: &str| -> u64 {
                plan.split(", ")
                    .find(|p| p.ends_with(word))
                    .and_then(|p| p.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            };
            bar.set_length(count("to index") + count("to delete"));
        }
        let done = lines
            .iter()
            .skip(1)
            .filter(|l| l["message"].as_str().is_some_and(|m| m.contains(": ")))
            .count() as u64;
        bar.set_position(done.min(bar.length().unwrap_or(done)));
        if let Some(last) = lines.last().and_then(|l| l["message"].as_str()) {
            bar.set_message(last.chars().take(60).collect::<String>());
        }
        match state["status"].as_str() {
            Some("running") => tokio::time::sleep(Duration::from_millis(200)).await,
            Some("completed") => {
                bar.finish_with_message("completed");
                let stats = client.get(&format!("/{id}/stats")).await?;
                eprintln!(
                    "{} files indexed, {} with errors",
                    stats["completed"], stats["error"]
                );
                for e in stats["file_embed_errors"].as_array().into_iter().flatten() {
                    eprintln!(
                        "  {}: {}",
                        e["key"].as_str().unwrap_or("?"),
                        e["error"].as_str().unwrap_or("?")
                    );
                }
                return Ok(());
            }
            Some(other) => {
                bar.abandon();
                bail!(
                    "the job ended {other}: {}",
                    state["end_reason"].as_str().unwrap_or("no reason given")
                );
            }
            None => bail!("the server answered no job status"),
        }
    }
}
