//! The `capstan` command line: a thin layer over the library.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Capstan: a Kubernetes controller manager whose reconcilers are WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "capstan", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller manager: every plugin in a directory against a cluster.
    Run(Box<capstan::manager::RunArgs>),
    /// Run Cluster API's scale test in one process (in-memory API server,
    /// Cluster API plugins, host, in-memory cloud) and write its report.
    Simulate(Box<capstan::simulate::SimulateArgs>),
    /// Work with a plugin component file.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

/// `capstan plugin ...`
#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Print a component's digest, contract version and describe() as YAML.
    /// Exits 2 when the file is not a component of this world.
    Inspect {
        /// The component (.wasm).
        file: PathBuf,
    },
    /// Run one reconcile of a snapshot file and print the outcome as YAML.
    Run {
        /// The component (.wasm).
        file: PathBuf,
        /// The snapshot: {"primary": {..}, "related": [{"relation", "synced", "objects": [..]}], "now"}.
        #[arg(long)]
        snapshot: PathBuf,
        /// Cache compiled artifacts in this directory.
        #[arg(long, env = "CAPSTAN_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Scaffold a reconciler plugin (Rust, Python or JavaScript) that builds
    /// and passes the conformance vectors as generated.
    New {
        /// Guest language: rust, python or js.
        #[arg(long, default_value = "rust")]
        lang: capstan::scaffold::Lang,
        /// Plugin name (DNS-1123 label); also the folder and component name.
        name: String,
        /// Folder to create (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The guest-sdk folder of a Capstan checkout (rust only; default:
        /// the checkout this binary was built from).
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
}

/// `capstan run`: its own telemetry setup (`--log-format`), a tokio runtime, exit 0 on a
/// clean shutdown.
fn run_manager(args: capstan::manager::RunArgs) -> ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            let config = capstan::runtime::RuntimeConfig {
                cache_dir: args.cache_dir.clone(),
                ..capstan::runtime::RuntimeConfig::default()
            };
            rt.block_on(capstan::manager::run_command(args, config))
                .map_err(anyhow::Error::from)
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `capstan simulate`: warnings only on stderr (the progress display owns the terminal),
/// Ctrl-C stops the run and the report of what completed is still written.
fn simulate(args: capstan::simulate::SimulateArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                let stop = tokio_util::sync::CancellationToken::new();
                let signal_stop = stop.clone();
                tokio::spawn(async move {
                    capstan::manager::shutdown_signal().await;
                    eprintln!("stopping: writing the report of what completed");
                    signal_stop.cancel();
                });
                capstan::simulate::run(args, capstan::runtime::RuntimeConfig::default(), stop)
                    .await
                    .map_err(anyhow::Error::from)
            })
        });
    match result {
        Ok(done) => {
            let s = &done.results.summary;
            eprintln!(
                "provisioned {} · failed {} · incomplete {} · delta last/first 100: {}",
                s.provisioned,
                s.failed,
                s.incomplete,
                s.delta_percent
                    .map_or_else(|| "-".to_owned(), |d| format!("{d:+.2}%"))
            );
            println!("report: {}", done.out.join("report.md").display());
            if s.failed > 0 || done.results.interrupted {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() -> ExitCode {
    // Written to dhat-heap.json when dropped, as `main` returns.
    #[cfg(feature = "dhat-heap")]
    let _heap_profiler = dhat::Profiler::new_heap();
    let plugin = match Cli::parse().command {
        Command::Run(args) => return run_manager(*args),
        Command::Simulate(args) => return simulate(*args),
        Command::Plugin(plugin) => plugin,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,capstan::plugin=info")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match plugin {
        PluginCommand::New {
            lang,
            name,
            dir,
            sdk_path,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let opts = capstan::scaffold::Options {
                lang,
                name,
                dir,
                sdk_path,
            };
            return match capstan::scaffold::scaffold(&opts) {
                Ok(made) => {
                    print!("{}", made.summary());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        PluginCommand::Inspect { file } => capstan::cli::plugin::command_runtime(None)
            .and_then(|rt| capstan::cli::plugin::inspect(&rt, &file)),
        PluginCommand::Run {
            file,
            snapshot,
            cache_dir,
        } => capstan::cli::plugin::command_runtime(cache_dir)
            .and_then(|rt| capstan::cli::plugin::run(&rt, &file, &snapshot)),
    };
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // One line, as scripts expect: wasmtime error chains may span several.
            let msg = e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!("error: {msg}");
            ExitCode::from(e.exit_code())
        }
    }
}
