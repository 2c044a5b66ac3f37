//! `rfx`: the command-line interface of rfx.

mod cli;

use clap::Parser;

/// stderr for logs, errors ignored: a process whose stderr is a closed
/// pipe (its manager died) must go on, not panic inside a log call.
struct QuietStderr;

impl std::io::Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("RFX_LOG"))
        .with_writer(|| QuietStderr)
        .init();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("rfx: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
