use clap::Parser;

fn main() {
    let cli = defsync::cli::Cli::parse();
    std::process::exit(defsync::cli::run(cli));
}
