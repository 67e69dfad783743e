//! The `tessera` binary: see `tessera --help`.

fn main() {
    if let Err(error) = tessera_server::cli::main() {
        eprintln!("tessera: {error:#}");
        std::process::exit(1);
    }
}
