//! Entry point: logging, configuration, then the chosen command.

fn main() {
    let _ = dotenvy::dotenv();
    orderlink::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(orderlink::cli::run(&args));
}
