//! A subcommand's output on stdout (`inferd openapi`, `check`, `probe`, `config-reference`,
//! `key new`, `replay`), written so that a closed stdout ends the process quietly.

use std::io::Write;

/// Writes `text` to stdout. A reader that closes the pipe early (`inferd openapi | head`) has
/// taken all it wanted: the process exits at once with status 0, as `cat` does, where `print!`
/// would panic. Any other failure (a full disk behind a redirect) is said on stderr, with
/// status 1.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "inferd: cannot write to stdout: {e}");
            std::process::exit(1);
        }
    }
}
