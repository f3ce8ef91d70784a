use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = bengkel_whatsapp::cli::Cli::parse();
    match bengkel_whatsapp::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
