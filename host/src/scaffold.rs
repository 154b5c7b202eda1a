//! `capstan plugin new`: writes a working reconciler project in Rust, Python or JavaScript.
//!
//! Every language starts from the hello reconciler, so a scaffolded plugin
//! builds and passes the conformance vectors (`tests/vectors/hello/`) out of
//! the box; the scaffold test in `tests/tests/scaffold.rs` holds it to that.
//! Templates live in `host/templates/<lang>/` and are embedded at compile
//! time together with the WIT contract and the language helpers, so the
//! `capstan` binary scaffolds without a source checkout (except that a Rust
//! plugin needs the path of `capstan-sdk` until the SDK is published).

use std::fmt;
use std::path::{Path, PathBuf};

/// The contract every scaffold carries a copy of (Python and JS bindings are
/// generated from it at build time).
const WIT: &str = include_str!("../../wit/reconciler.wit");
/// The Rust toolchain pin (with the wasm32-wasip2 target).
const RUST_TOOLCHAIN: &str = include_str!("../../rust-toolchain.toml");
/// How guests are built (Wasm SIMD, inlining): the workspace's own settings.
const CARGO_CONFIG: &str = include_str!("../../.cargo/config.toml");

/// The guest languages `capstan plugin new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Rust with `capstan-sdk`, built by cargo for wasm32-wasip2.
    Rust,
    /// Python with `capstan_sdk`, built by componentize-py.
    Python,
    /// JavaScript with `capstan-sdk.js`, built by componentize-js.
    Js,
}

impl Lang {
    /// Every language, in the order the docs list them.
    pub const ALL: [Lang; 3] = [Lang::Rust, Lang::Python, Lang::Js];
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        })
    }
}

impl std::str::FromStr for Lang {
    type Err = ScaffoldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rust" => Ok(Lang::Rust),
            "python" => Ok(Lang::Python),
            "js" | "javascript" => Ok(Lang::Js),
            other => Err(ScaffoldError::UnknownLang(other.to_owned())),
        }
    }
}

/// Why a plugin could not be scaffolded.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The language is not one of rust, python, js.
    #[error("unknown plugin language {0:?}: expected rust, python or js")]
    UnknownLang(String),
    /// The name is not a DNS-1123 label starting with a letter.
    #[error(
        "invalid plugin name {0:?}: use 1-63 lowercase letters, digits and '-', starting with a letter and not ending with '-'"
    )]
    InvalidName(String),
    /// The target folder exists and is not empty.
    #[error("cannot scaffold plugin into {}: the folder exists and is not empty", .0.display())]
    NotEmpty(PathBuf),
    /// A Rust plugin needs `capstan-sdk`, which is not published yet.
    #[error(
        "cannot scaffold rust plugin {0}: capstan-sdk is not published yet; pass --sdk-path to the guest-sdk folder of a Capstan checkout"
    )]
    NoSdk(String),
    /// Writing a file failed.
    #[error("cannot write {} of the scaffolded plugin", .path.display())]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// What to scaffold and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// The guest language.
    pub lang: Lang,
    /// The plugin name (DNS-1123 label); also the folder and component name.
    pub name: String,
    /// The folder to create (must not exist or be empty).
    pub dir: PathBuf,
    /// The `guest-sdk` folder of a Capstan checkout (Rust only); when `None`,
    /// the checkout this binary was built from is used if it still exists.
    pub sdk_path: Option<PathBuf>,
}

/// A scaffolded project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scaffolded {
    /// The project folder.
    pub dir: PathBuf,
    /// Files written, relative to `dir`.
    pub files: Vec<PathBuf>,
    /// Shell commands, run in `dir`, that build the component.
    pub build: Vec<String>,
    /// The built component, relative to `dir`.
    pub component: PathBuf,
}

impl Scaffolded {
    /// What `capstan plugin new` prints: where the project is and how to build it.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "created {}\nbuild it with:\n  cd {}\n",
            self.dir.display(),
            self.dir.display()
        );
        for step in &self.build {
            s.push_str(&format!("  {step}\n"));
        }
        s.push_str(&format!(
            "component: {}\n",
            self.dir.join(&self.component).display()
        ));
        s
    }
}

/// Whether `name` is a valid plugin name: a DNS-1123 label starting with a letter.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Fill `{{key}}` placeholders.
fn render(template: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(template.to_owned(), |s, (k, v)| {
        s.replace(&format!("{{{{{k}}}}}"), v)
    })
}

/// The files of a project in `lang` named `name`, with their contents.
fn files(
    lang: Lang,
    name: &str,
    sdk: Option<&Path>,
) -> Result<Vec<(&'static str, String)>, ScaffoldError> {
    let crate_name = name.replace('-', "_");
    let vars = [("name", name), ("crate", crate_name.as_str())];
    let r = |t: &str| render(t, &vars);
    Ok(match lang {
        Lang::Rust => {
            let sdk = sdk.ok_or_else(|| ScaffoldError::NoSdk(name.to_owned()))?;
            // TOML basic strings need backslashes and quotes escaped.
            let sdk = sdk
                .display()
                .to_string()
                .replace('\\', "\\\\")
                .replace('"', "\\\"");
            let cargo = render(
                include_str!("../templates/rust/Cargo.toml"),
                &[("name", name), ("sdk_path", &sdk)],
            );
            vec![
                ("Cargo.toml", cargo),
                (
                    "src/lib.rs",
                    r(include_str!("../templates/rust/src/lib.rs")),
                ),
                ("README.md", r(include_str!("../templates/rust/README.md"))),
                ("rust-toolchain.toml", RUST_TOOLCHAIN.to_owned()),
                (".cargo/config.toml", CARGO_CONFIG.to_owned()),
                (".gitignore", "target/\n".to_owned()),
            ]
        }
        Lang::Python => vec![
            ("app.py", r(include_str!("../templates/python/app.py"))),
            (
                "capstan_sdk/__init__.py",
                include_str!("../../guest-sdk/python/capstan_sdk/__init__.py").to_owned(),
            ),
            (
                "capstan_sdk/conditions.py",
                include_str!("../../guest-sdk/python/capstan_sdk/conditions.py").to_owned(),
            ),
            (
                "requirements.txt",
                include_str!("../../examples/hello-python/requirements.txt").to_owned(),
            ),
            ("build.sh", r(include_str!("../templates/python/build.sh"))),
            (
                "README.md",
                r(include_str!("../templates/python/README.md")),
            ),
            ("wit/reconciler.wit", WIT.to_owned()),
            (
                ".gitignore",
                include_str!("../templates/python/gitignore").to_owned(),
            ),
        ],
        Lang::Js => {
            // The example's lock file pins the same tools; only the root
            // package's name differs (the first two "name" entries).
            let lock = include_str!("../../examples/hello-js/package-lock.json").replacen(
                "\"name\": \"hello-js\"",
                &format!("\"name\": \"{name}\""),
                2,
            );
            vec![
                ("plugin.js", r(include_str!("../templates/js/plugin.js"))),
                (
                    "lib/capstan-sdk.js",
                    include_str!("../../guest-sdk/js/capstan-sdk.js").to_owned(),
                ),
                (
                    "lib/conditions.js",
                    include_str!("../../guest-sdk/js/conditions.js").to_owned(),
                ),
                (
                    "package.json",
                    r(include_str!("../templates/js/package.json")),
                ),
                ("package-lock.json", lock),
                ("README.md", r(include_str!("../templates/js/README.md"))),
                ("wit/reconciler.wit", WIT.to_owned()),
                (
                    ".gitignore",
                    include_str!("../templates/js/gitignore").to_owned(),
                ),
            ]
        }
    })
}

/// The SDK folder of the checkout this binary was built from, if it still exists.
fn default_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
    sdk.join("Cargo.toml")
        .is_file()
        .then(|| sdk.canonicalize().unwrap_or(sdk))
}

/// Write a new plugin project as `opts` says.
pub fn scaffold(opts: &Options) -> Result<Scaffolded, ScaffoldError> {
    if !valid_name(&opts.name) {
        return Err(ScaffoldError::InvalidName(opts.name.clone()));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScaffoldError::Io { path, source }
    };
    if opts.dir.exists()
        && std::fs::read_dir(&opts.dir)
            .map_err(io(&opts.dir))?
            .next()
            .is_some()
    {
        return Err(ScaffoldError::NotEmpty(opts.dir.clone()));
    }
    let sdk = match (&opts.sdk_path, opts.lang) {
        (Some(p), Lang::Rust) => Some(p.canonicalize().map_err(io(p))?),
        (None, Lang::Rust) => default_sdk(),
        _ => None,
    };
    let files = files(opts.lang, &opts.name, sdk.as_deref())?;
    let mut written = Vec::with_capacity(files.len());
    for (rel, contents) in files {
        let path = opts.dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, contents).map_err(io(&path))?;
        written.push(PathBuf::from(rel));
    }
    let name = &opts.name;
    let (build, component) = match opts.lang {
        Lang::Rust => (
            vec!["cargo build --release --target wasm32-wasip2".to_owned()],
            format!(
                "target/wasm32-wasip2/release/{}.wasm",
                name.replace('-', "_")
            ),
        ),
        Lang::Python => (vec!["sh build.sh".to_owned()], format!("{name}.wasm")),
        Lang::Js => (
            vec![
                "npm ci --ignore-scripts --no-audit --no-fund".to_owned(),
                "npm run build".to_owned(),
            ],
            format!("{name}.wasm"),
        ),
    };
    Ok(Scaffolded {
        dir: opts.dir.clone(),
        files: written,
        build,
        component: PathBuf::from(component),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels_starting_with_a_letter() {
        for ok in ["a", "hello", "my-plugin-2", &"x".repeat(63)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Hello",
            "1abc",
            "-a",
            "a-",
            "a_b",
            "a.b",
            "ü",
            &"x".repeat(64),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        let sdk = Path::new("/opt/capstan/guest-sdk");
        for lang in Lang::ALL {
            for (path, contents) in files(lang, "my-plugin", Some(sdk)).expect("files") {
                assert!(
                    !contents.contains("{{"),
                    "{lang}: {path} keeps a placeholder"
                );
                if path.ends_with(".py") || path.ends_with(".js") || path.ends_with(".rs") {
                    assert!(
                        contents.starts_with("//!") || contents.starts_with("\"\"\""),
                        "{lang}: {path}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_name_reaches_describe_and_the_build() {
        let sdk = Path::new("/opt/capstan/guest-sdk");
        let get = |lang, file: &str| {
            files(lang, "my-plugin", Some(sdk))
                .expect("files")
                .into_iter()
                .find(|(p, _)| *p == file)
                .map(|(_, c)| c)
                .expect(file)
        };
        assert!(get(Lang::Python, "app.py").contains("NAME = \"my-plugin\""));
        assert!(get(Lang::Js, "plugin.js").contains("const NAME = 'my-plugin';"));
        assert!(get(Lang::Js, "package.json").contains("my-plugin.wasm"));
        let lock = get(Lang::Js, "package-lock.json");
        assert_eq!(lock.matches("\"name\": \"my-plugin\"").count(), 2);
        assert!(!lock.contains("hello-js"));
        assert!(get(Lang::Rust, "Cargo.toml").contains("name = \"my-plugin\""));
        // Built as this workspace builds its guests.
        assert!(get(Lang::Rust, ".cargo/config.toml").contains("llvm-args=-inline-threshold"));
        assert!(get(Lang::Rust, "Cargo.toml").contains("path = \"/opt/capstan/guest-sdk\""));
        assert!(get(Lang::Rust, "src/lib.rs").contains("\"my-plugin\""));
    }

    #[test]
    fn refuses_bad_names_and_non_empty_folders() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let opts = |name: &str, dir: PathBuf| Options {
            lang: Lang::Python,
            name: name.to_owned(),
            dir,
            sdk_path: None,
        };
        assert!(matches!(
            scaffold(&opts("Bad", tmp.path().join("x"))),
            Err(ScaffoldError::InvalidName(_))
        ));
        std::fs::write(tmp.path().join("keep"), "").expect("write");
        assert!(matches!(
            scaffold(&opts("ok", tmp.path().to_path_buf())),
            Err(ScaffoldError::NotEmpty(_))
        ));
        let made = scaffold(&opts("ok", tmp.path().join("ok"))).expect("scaffold");
        assert!(made.dir.join("app.py").is_file());
        assert!(made.dir.join("wit/reconciler.wit").is_file());
        assert_eq!(made.component, PathBuf::from("ok.wasm"));
    }

    #[test]
    fn rust_without_sdk_path_is_explained() {
        assert!(matches!(
            files(Lang::Rust, "x", None),
            Err(ScaffoldError::NoSdk(_))
        ));
        assert!("cobol".parse::<Lang>().is_err());
        assert_eq!("js".parse::<Lang>().expect("js"), Lang::Js);
    }
}
