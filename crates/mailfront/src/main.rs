//! The `mailfront` binary. Everything lives in the library; see [`mailfront::cli`].

fn main() -> std::process::ExitCode {
    mailfront::cli::main()
}
