//! The `hearth` binary: command-line parsing and process wiring only
//! (`serve`, `run`, `models`, `usage`, `vectorize`, `search`, `config`). `anyhow` lives here and nowhere else.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use hearth_engine::{GenEvent, PullProgress};
use hearth_runtime::config::ConfigSources;
use hearth_runtime::{App, Config, PromptInput};
use hearth_types::textgen::validate_params;

mod api_client;
mod search_cli;
mod vectorize_cli;

#[derive(Parser)]
#[command(
    name = "hearth",
    version,
    about = "Cloudflare Workers AI, on your own machine"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct GlobalArgs {
    /// Config file (default: ./hearth.toml, else <data dir>/hearth.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Folder that holds everything Hearth writes.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Folder of model weights (default: <data dir>/models).
    #[arg(long, global = true)]
    models_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the HTTP server.
    Serve {
        /// HOST:PORT to listen on (default 127.0.0.1:8787).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Generate text from a prompt, streaming tokens to the terminal.
    Run {
        /// Model id, e.g. @cf/huggingfacetb/smollm2-135m-instruct (default: the configured default model).
        model: String,
        prompt: String,
        #[arg(long)]
        max_tokens: Option<i64>,
        #[arg(long)]
        temperature: Option<f64>,
        #[arg(long)]
        seed: Option<i64>,
        /// Send the prompt as is, without the chat template.
        #[arg(long)]
        raw: bool,
    },
    /// Weights on disk.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Neurons, tokens and requests per day and model, and what they would cost on Cloudflare.
    Usage {
        /// One account (default: every account).
        #[arg(long)]
        account: Option<String>,
        /// First day, YYYY-MM-DD (default: 30 days ago).
        #[arg(long)]
        since: Option<String>,
        /// Last day, YYYY-MM-DD (default: today).
        #[arg(long)]
        until: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Vectorize indexes of a running server.
    Vectorize {
        #[command(flatten)]
        connection: api_client::Connection,
        #[command(subcommand)]
        command: vectorize_cli::VectorizeCommand,
    },
    /// AI Search instances of a running server: create, sync, query.
    Search {
        #[command(flatten)]
        connection: api_client::Connection,
        #[command(subcommand)]
        command: search_cli::SearchCommand,
    },
    /// Configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Catalog models and whether each is servable here.
    List {
        /// Show every catalog entry, not only servable ones.
        #[arg(long)]
        all: bool,
    },
    /// Download a model's weights from the hub.
    Pull {
        model: String,
        /// Hugging Face-compatible endpoint (default: config `hub_endpoint`).
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Delete a model's weights.
    Rm { model: String },
    /// Write a tiny model with random weights in a task's real file layout,
    /// to try that task's contract offline (answers are deterministic, not
    /// meaningful); serve it with an alias, e.g. `"@cf/facebook/detr-resnet-50"
    /// = "/abs/DIR"`.
    Tiny {
        kind: TinyKind,
        /// Folder to write (created if missing).
        dir: std::path::PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TinyKind {
    /// XLM-RoBERTa cross-encoder (bge-reranker-base's architecture).
    Reranker,
    /// DistilBERT sequence classifier (distilbert-sst-2's).
    Classifier,
    /// DETR with a timm ResNet backbone (detr-resnet-50's).
    Detr,
    /// BART (bart-large-cnn's).
    Bart,
    /// LLaVA 1.5 (llava-1.5-7b-hf's).
    Llava,
    /// Llama 3.2 Vision (cross-attention layers over a tiled ViT;
    /// llama-3.2-11b-vision-instruct's).
    LlamaVision,
    /// Stable Diffusion 1.x with a DDIM scheduler.
    StableDiffusion,
    /// Stable Diffusion 1.x inpainting (9-channel UNet).
    StableDiffusionInpainting,
    /// Stable Diffusion 1.x with an LCM scheduler (dreamshaper-8-lcm's).
    StableDiffusionLcm,
    /// SDXL (two text encoders, added text/time conditioning) with a
    /// trailing Euler scheduler (SDXL-Lightning's).
    StableDiffusionXl,
    /// FLUX.1-schnell.
    Flux,
}

fn write_tiny(kind: TinyKind, dir: &std::path::Path) -> Result<()> {
    use hearth_engine::{bart, classify, describe, detect, diffusion, flux, mllama, rerank};
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    match kind {
        TinyKind::Reranker => rerank::write_tiny_model(dir)?,
        TinyKind::Classifier => classify::write_tiny_model(dir)?,
        TinyKind::Detr => detect::write_tiny_model(dir)?,
        TinyKind::Bart => bart::write_tiny_model(dir)?,
        TinyKind::Llava => describe::write_tiny_model(dir)?,
        TinyKind::LlamaVision => mllama::write_tiny_model(dir)?,
        TinyKind::StableDiffusion => diffusion::write_tiny_model(dir, "DDIMScheduler", 4)?,
        TinyKind::StableDiffusionInpainting => {
            diffusion::write_tiny_model(dir, "DDIMScheduler", 9)?
        }
        TinyKind::StableDiffusionLcm => diffusion::write_tiny_model(dir, "LCMScheduler", 4)?,
        TinyKind::StableDiffusionXl => {
            diffusion::write_tiny_xl_model(dir, "EulerDiscreteScheduler")?
        }
        TinyKind::Flux => flux::write_tiny_model(dir)?,
    }
    Ok(())
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and validate the configuration, then print it.
    Check,
}

fn load_config(global: &GlobalArgs, extra: Vec<(String, String)>) -> Result<Config> {
    let mut flags = extra;
    if let Some(d) = &global.data_dir {
        flags.push(("data_dir".into(), d.display().to_string()));
    }
    if let Some(d) = &global.models_dir {
        flags.push(("models_dir".into(), d.display().to_string()));
    }
    Ok(Config::load(ConfigSources::from_process(
        global.config.clone(),
        flags,
    ))?)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,tower_http=warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { listen } => {
            init_tracing();
            let flags = listen
                .map(|l| ("listen".to_string(), l))
                .into_iter()
                .collect();
            serve(load_config(&cli.global, flags)?).await
        }
        Command::Run {
            model,
            prompt,
            max_tokens,
            temperature,
            seed,
            raw,
        } => {
            let config = load_config(&cli.global, Vec::new())?;
            run(config, &model, prompt, raw, max_tokens, temperature, seed).await
        }
        Command::Models { command } => {
            let config = load_config(&cli.global, Vec::new())?;
            models(config, command).await
        }
        Command::Usage {
            account,
            since,
            until,
            json,
        } => {
            let config = load_config(&cli.global, Vec::new())?;
            usage(config, account, since, until, json)
        }
        Command::Vectorize {
            connection,
            command,
        } => {
            let config = load_config(&cli.global, Vec::new())?;
            vectorize_cli::run(config, connection, command).await
        }
        Command::Search {
            connection,
            command,
        } => {
            let config = load_config(&cli.global, Vec::new())?;
            search_cli::run(config, connection, command).await
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let config = load_config(&cli.global, Vec::new())?;
            let mut shown = config.clone();
            if shown.api_token.is_some() {
                shown.api_token = Some("<set>".into());
            }
            if shown.hub_token.is_some() {
                shown.hub_token = Some("<set>".into());
            }
            if let Some(r2) = &mut shown.search.r2
                && r2.secret_access_key.is_some()
            {
                r2.secret_access_key = Some("<set>".into());
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::to_value(&shown)?)?
            );
            eprintln!("configuration is valid");
            Ok(())
        }
    }
}

async fn serve(config: Config) -> Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let app = Arc::new(App::new(config.clone())?);
    let created = app.bootstrap_accounts()?;
    // Recover Vectorize indexes (snapshot + log) before taking requests.
    let opening = Arc::clone(&app);
    tokio::task::spawn_blocking(move || opening.vectorize())
        .await?
        .context("cannot open the Vectorize store")?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let (account, token) = match (&created, &config.account_id, &config.api_token) {
        (Some((id, token)), _, _) => {
            println!(
                "Created a local account (stored in {}):",
                config.data_dir.join("accounts.json").display()
            );
            println!("  HEARTH_ACCOUNT_ID={id}");
            println!("  HEARTH_API_TOKEN={token}");
            println!("  (the token is shown once; only its hash is stored)");
            (id.clone(), token.clone())
        }
        (None, Some(id), Some(_)) => (id.clone(), "$HEARTH_API_TOKEN".to_string()),
        _ => ("<account id>".to_string(), "<token>".to_string()),
    };
    println!("Hearth listening on http://{addr}");
    println!(
        "Try:\n  curl http://{addr}/client/v4/accounts/{account}/ai/run/{model} \\\n    -H 'Authorization: Bearer {token}' \\\n    -d '{{\"prompt\": \"Where did the phrase Hello World come from?\"}}'",
        model = config.default_model
    );
    let _ = std::io::stdout().flush();
    // Load the default model in the background so the first request is fast.
    let warm = Arc::clone(&app);
    tokio::spawn(async move {
        let model = warm.config().default_model.clone();
        if let Ok(resolved) = warm.resolve(&model)
            && let Err(e) = warm.text_generator(&resolved).await
        {
            tracing::warn!(error = %e, model, "default model failed to load");
        }
    });
    hearth_server::batch::spawn_background(Arc::clone(&app));
    let (router, gateway) = hearth_server::service(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    // Gateway log entries still queued are stored before exiting.
    tokio::task::spawn_blocking(move || gateway.flush()).await?;
    Ok(())
}

fn usage(
    config: Config,
    account: Option<String>,
    since: Option<String>,
    until: Option<String>,
    json: bool,
) -> Result<()> {
    use hearth_runtime::metering::day_of;
    let app = App::new(config)?;
    let now = app.meter().now_ms();
    let since = since.unwrap_or_else(|| day_of(now - 29 * 86_400_000));
    let until = until.unwrap_or_else(|| day_of(now));
    let report = app
        .meter()
        .report(account.as_deref(), &since, &until)
        .map_err(|e| anyhow::anyhow!(e.message))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{:<10}  {:<32}  {:<44}  {:>8}  {:>10}  {:>10}  {:>12}  {:>10}",
        "day", "account", "model", "requests", "in tokens", "out tokens", "neurons", "usd"
    );
    for r in &report.rows {
        println!(
            "{:<10}  {:<32}  {:<44}  {:>8}  {:>10}  {:>10}  {:>12.2}  {:>10.6}",
            r.row.day,
            r.row.account,
            r.row.model,
            r.row.requests,
            r.row.input_tokens,
            r.row.output_tokens,
            r.row.neurons,
            r.usd
        );
    }
    let t = &report.totals;
    println!(
        "total: {} requests, {} input + {} output tokens, {:.2} neurons = ${:.6} at list price;          Cloudflare would bill ${:.6} after the free {} neurons a day",
        t.requests,
        t.input_tokens,
        t.output_tokens,
        t.neurons,
        t.usd,
        t.cloudflare_usd,
        report.free_neurons_per_day
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

async fn run(
    config: Config,
    model: &str,
    prompt: String,
    raw: bool,
    max_tokens: Option<i64>,
    temperature: Option<f64>,
    seed: Option<i64>,
) -> Result<()> {
    let app = App::new(config)?;
    let params = validate_params(max_tokens, temperature, None, None, seed, None, None, None)
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let mut generation = app
        .generate(
            model,
            PromptInput::Prompt { text: prompt, raw },
            params,
            false,
        )
        .await
        .map_err(|e| anyhow::anyhow!(hearth_types::ApiError::from(e).message))?;
    let mut out = std::io::stdout();
    while let Some(event) = generation.stream.next().await {
        match event {
            GenEvent::Text(t) => {
                out.write_all(t.as_bytes())?;
                out.flush()?;
            }
            GenEvent::Done {
                prompt_tokens,
                completion_tokens,
                ..
            } => {
                println!();
                eprintln!(
                    "[{} prompt tokens, {} completion tokens; weights {}]",
                    prompt_tokens, completion_tokens, generation.resolved.weights_label
                );
                return Ok(());
            }
            GenEvent::Failed(e) => bail!("generation failed: {e}"),
        }
    }
    bail!("generation ended without a result")
}

struct Bar(indicatif::ProgressBar);

impl PullProgress for Bar {
    fn start(&self, file: &str, total: Option<u64>, already: u64) {
        self.0.reset();
        if let Some(t) = total {
            self.0.set_length(t);
        }
        self.0.set_position(already);
        self.0.set_message(file.to_string());
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn finish(&self, file: &str) {
        self.0.println(format!("  {file}: done"));
    }
}

async fn models(config: Config, command: ModelsCommand) -> Result<()> {
    if let ModelsCommand::Tiny { kind, dir } = &command {
        write_tiny(*kind, dir)?;
        println!("{}: written", dir.display());
        return Ok(());
    }
    let app = App::new(config)?;
    match command {
        ModelsCommand::List { all } => {
            println!("{:<50} {:<22} {:<14} SIZE", "MODEL", "TASK", "STATUS");
            for entry in app.catalog().models() {
                let status = app.status(entry);
                if !all && !status.servable() {
                    continue;
                }
                let size = entry
                    .weights
                    .as_ref()
                    .map(|w| app.store().size_on_disk(w))
                    .filter(|s| *s > 0)
                    .map(|s| format!("{:.1} MB", s as f64 / 1e6))
                    .unwrap_or_default();
                let label = match &status {
                    hearth_runtime::ModelStatus::Aliased { to, .. } => format!("alias → {to}"),
                    other => other.label().to_string(),
                };
                println!("{:<50} {:<22} {:<14} {size}", entry.name, entry.task, label);
            }
            Ok(())
        }
        ModelsCommand::Pull { model, endpoint } => {
            let entry = app
                .catalog()
                .get(&model)
                .with_context(|| format!("{model} is not in the catalog"))?;
            let weights = entry
                .weights
                .as_ref()
                .with_context(|| format!("{model} has no weights Hearth can download"))?;
            let endpoint = endpoint.unwrap_or_else(|| app.config().hub_endpoint.clone());
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )?
                .progress_chars("=> "),
            );
            app.store()
                .pull(
                    weights,
                    &endpoint,
                    app.config().hub_token.as_deref(),
                    &Bar(bar.clone()),
                )
                .await?;
            bar.finish_and_clear();
            println!(
                "{model}: installed in {}",
                app.store().dir_of(weights).display()
            );
            Ok(())
        }
        ModelsCommand::Tiny { .. } => Ok(()),
        ModelsCommand::Rm { model } => {
            let entry = app
                .catalog()
                .get(&model)
                .with_context(|| format!("{model} is not in the catalog"))?;
            let weights = entry
                .weights
                .as_ref()
                .with_context(|| format!("{model} has no weights"))?;
            if app.store().remove(weights)? {
                println!("{model}: removed");
            } else {
                println!("{model}: nothing to remove");
            }
            Ok(())
        }
    }
}
