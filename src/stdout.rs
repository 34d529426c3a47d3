//! The one writer of what commands print: a reader that stops early (`| head`, a closed pipe) ends
//! the output, never the command (#19). `println!` panics on a closed stdout, which with
//! `panic = "abort"` killed `pools` between draining a replica and starting it again. An error
//! writing to the terminal or a pipe is nothing a command could act on, so it is dropped.

use std::fmt;
use std::io::{self, ErrorKind, Write as _};

/// Writes `text` to standard output; a closed pipe is not an error.
pub fn print(text: &str) -> io::Result<()> {
    match io::stdout().lock().write_all(text.as_bytes()) {
        Err(err) if err.kind() == ErrorKind::BrokenPipe => Ok(()),
        done => done,
    }
}

/// Writes one line to standard output, whatever became of the reader.
pub fn line(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    let _ = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
}

/// Writes `args` to standard output as they are, whatever became of the reader.
pub fn text(args: fmt::Arguments<'_>) {
    let _ = io::stdout().lock().write_fmt(args);
}

/// Writes one line to standard error, whatever became of the reader.
pub fn error_line(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// `println!` that never panics: see the module's doc.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::stdout::line(format_args!($($arg)*)) };
}

/// `print!` that never panics.
macro_rules! out {
    ($($arg:tt)*) => { $crate::stdout::text(format_args!($($arg)*)) };
}

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::stdout::error_line(format_args!($($arg)*)) };
}

pub(crate) use {errln, out, outln};
