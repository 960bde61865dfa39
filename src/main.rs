use clap::{Parser, Subcommand};
use podo::{Application, Config};

#[derive(Parser)]
#[command(name = "podo", version, about = "podo: realtime family server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (migrates the database first).
    Serve(Box<Config>),
}

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let Cli { command } = Cli::parse();
    match command {
        Command::Serve(config) => match actix_web::rt::System::new().block_on(serve(*config)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(err) => {
                log::error!("podo stopped: {err}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

async fn serve(config: Config) -> Result<(), podo::app::StartError> {
    let app = Application::build(config).await?;
    log::info!("podo listening on http://{}", app.address());
    app.run_until_signal().await
}
