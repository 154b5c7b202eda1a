//! The `capstan` command line: a thin layer over the library.

use capstan::scaffold;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Capstan: a Kubernetes controller manager whose reconcilers are WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "capstan", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with reconciler plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Scaffold a reconciler plugin that builds and passes the conformance vectors.
    New {
        /// Guest language: rust, python or js.
        #[arg(long, default_value = "rust")]
        lang: scaffold::Lang,
        /// Plugin name (DNS-1123 label); also the folder and component name.
        name: String,
        /// Folder to create (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The guest-sdk folder of a Capstan checkout (rust only; default: the
        /// checkout this binary was built from).
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Plugin {
            command:
                PluginCommand::New {
                    lang,
                    name,
                    dir,
                    sdk_path,
                },
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let made = scaffold::scaffold(&scaffold::Options {
                lang,
                name,
                dir,
                sdk_path,
            })?;
            println!("created {lang} plugin in {}", made.dir.display());
            println!("build it with:");
            println!("  cd {}", made.dir.display());
            for step in &made.build {
                println!("  {step}");
            }
            println!("component: {}", made.dir.join(&made.component).display());
        }
    }
    Ok(())
}
