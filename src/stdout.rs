//! Standard output for commands that print much (`report`, `doctor`): a reader that stops early
//! (`| head`) ends the output, not the command.

use std::io::{self, ErrorKind, Write as _};

/// Writes `text` to standard output; a closed pipe is not an error.
pub fn print(text: &str) -> io::Result<()> {
    match io::stdout().lock().write_all(text.as_bytes()) {
        Err(err) if err.kind() == ErrorKind::BrokenPipe => Ok(()),
        done => done,
    }
}
