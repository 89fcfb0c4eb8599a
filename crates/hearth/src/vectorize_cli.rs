//! `hearth vectorize ...`: a client of a running server's Vectorize API,
//! as `wrangler vectorize` is of Cloudflare's.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use hearth_runtime::Config;
use serde_json::{Value, json};

use crate::api_client::{Client, Connection};

#[derive(Subcommand)]
pub enum VectorizeCommand {
    /// Create an index from dimensions and a metric, or a preset model.
    Create {
        name: String,
        #[arg(long, required_unless_present = "preset")]
        dimensions: Option<u32>,
        /// cosine, euclidean or dot-product.
        #[arg(long, default_value = "cosine")]
        metric: String,
        /// An embedding model id, e.g. @cf/baai/bge-small-en-v1.5.
        #[arg(long, conflicts_with = "dimensions")]
        preset: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List the account's indexes.
    List,
    /// Dimensions, vector count and the last applied mutation.
    Info { name: String },
    /// Delete an index and its vectors.
    Delete { name: String },
    /// Insert (or with --upsert, upsert) the vectors of an NDJSON file, in batches.
    Insert {
        name: String,
        file: PathBuf,
        #[arg(long)]
        upsert: bool,
        /// Vectors per request (Vectorize takes at most 5,000).
        #[arg(long, default_value_t = 5000)]
        batch: usize,
        /// Wait until every batch is applied.
        #[arg(long)]
        wait: bool,
    },
    /// Nearest neighbours of a vector (JSON array) or of a stored vector's id.
    Query {
        name: String,
        #[arg(long, required_unless_present = "id")]
        vector: Option<String>,
        #[arg(long, conflicts_with = "vector")]
        id: Option<String>,
        #[arg(long, default_value_t = 5)]
        top_k: u32,
        /// A metadata filter as JSON, e.g. '{"genre": "drama"}'.
        #[arg(long)]
        filter: Option<String>,
        #[arg(long)]
        namespace: Option<String>,
        #[arg(long)]
        return_values: bool,
        /// none, indexed or all.
        #[arg(long, default_value = "none")]
        return_metadata: String,
    },
}

async fn wait_for(client: &Client, name: &str, mutation: &str) -> Result<()> {
    loop {
        let info = client.get(&format!("/{name}/info")).await?;
        if info["processedUpToMutation"] == mutation {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn run(config: Config, conn: Connection, command: VectorizeCommand) -> Result<()> {
    let client = Client::new(&config, conn, "/vectorize/v2/indexes")?;
    match command {
        VectorizeCommand::Create {
            name,
            dimensions,
            metric,
            preset,
            description,
        } => {
            let config = match preset {
                Some(p) => json!({"preset": p}),
                None => json!({"dimensions": dimensions, "metric": metric}),
            };
            let mut body = json!({"name": name, "config": config});
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            print(&client.post_json("", &body).await?)
        }
        VectorizeCommand::List => print(&client.get("").await?),
        VectorizeCommand::Info { name } => print(&client.get(&format!("/{name}/info")).await?),
        VectorizeCommand::Delete { name } => {
            client
                .send(client.http.delete(format!("{}/{name}", client.base)))
                .await?;
            eprintln!("deleted index {name}");
            Ok(())
        }
        VectorizeCommand::Insert {
            name,
            file,
            upsert,
            batch,
            wait,
        } => insert(&client, &name, &file, upsert, batch.clamp(1, 5000), wait).await,
        VectorizeCommand::Query {
            name,
            vector,
            id,
            top_k,
            filter,
            namespace,
            return_values,
            return_metadata,
        } => {
            let mut body = json!({
                "topK": top_k,
                "returnValues": return_values,
                "returnMetadata": return_metadata,
            });
            if let Some(v) = vector {
                body["vector"] =
                    serde_json::from_str(&v).context("--vector must be a JSON array of numbers")?;
            }
            if let Some(id) = id {
                body["id"] = json!(id);
            }
            if let Some(f) = filter {
                body["filter"] = serde_json::from_str(&f).context("--filter must be JSON")?;
            }
            if let Some(ns) = namespace {
                body["namespace"] = json!(ns);
            }
            print(&client.post_json(&format!("/{name}/query"), &body).await?)
        }
    }
}

async fn insert(
    client: &Client,
    name: &str,
    file: &PathBuf,
    upsert: bool,
    batch: usize,
    wait: bool,
) -> Result<()> {
    let open =
        || std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()));
    let total = BufReader::new(open()?)
        .lines()
        .map_while(std::io::Result::ok)
        .filter(|l| !l.trim().is_empty())
        .count();
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} vectors {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let op = if upsert { "upsert" } else { "insert" };
    let url = format!("{}/{name}/{op}", client.base);
    let mut last = None;
    let mut chunk = String::new();
    let mut in_chunk = 0;
    let mut lines = BufReader::new(open()?).lines();
    loop {
        let line = lines.next().transpose()?;
        if let Some(l) = &line
            && !l.trim().is_empty()
        {
            chunk.push_str(l);
            chunk.push('\n');
            in_chunk += 1;
        }
        // Also cut by size: the upload limit is 100 MB.
        let full = in_chunk == batch || chunk.len() > 64 << 20;
        if (full || line.is_none()) && in_chunk > 0 {
            let body = std::mem::take(&mut chunk);
            let result = client
                .send(
                    client
                        .http
                        .post(&url)
                        .header("content-type", "application/x-ndjson")
                        .body(body),
                )
                .await?;
            last = result["mutationId"].as_str().map(str::to_string);
            bar.inc(in_chunk as u64);
            in_chunk = 0;
        }
        if line.is_none() {
            break;
        }
    }
    bar.finish();
    let Some(mutation) = last else {
        bail!("{} holds no vectors", file.display());
    };
    if wait {
        wait_for(client, name, &mutation).await?;
        eprintln!("applied up to mutation {mutation}");
    }
    print(&json!({"mutationId": mutation, "vectors": total}))
}
