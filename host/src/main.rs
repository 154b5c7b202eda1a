//! The `capstan` command line: a thin layer over the library.

fn main() -> anyhow::Result<()> {
    Ok(())
}
