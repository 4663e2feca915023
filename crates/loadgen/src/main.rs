//! `mailfront-bench`: see the `mailfront_loadgen` library and `bench/README.md`.

use std::process::ExitCode;

use clap::Parser;
use mailfront_loadgen::scenarios::{self, write_atomically};
use mailfront_loadgen::settings::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    let output = args.output.clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mailfront-bench: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match runtime.block_on(scenarios::run(args)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("mailfront-bench: {e}");
            return ExitCode::from(2);
        }
    };
    // Sessions still open (idle) are dropped with the runtime, without waiting for them.
    runtime.shutdown_background();
    let json = match serde_json::to_string(&report) {
        Ok(json) => json,
        Err(e) => {
            eprintln!("mailfront-bench: cannot write the report: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{json}");
    if let Some(path) = output
        && let Err(e) = write_atomically(&path, format!("{json}\n").as_bytes())
    {
        eprintln!("mailfront-bench: {e}");
        return ExitCode::from(2);
    }
    if let Some(error) = &report.first_error {
        eprintln!(
            "mailfront-bench: {} error(s), the first: {error}",
            report.errors
        );
    }
    ExitCode::SUCCESS
}
