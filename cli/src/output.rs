//! Best-effort printing. A reader that goes away (`weir status | head -1`, `weir run 2>&1 |
//! head`) must not crash a command with a "Broken pipe" panic, as `println!` would: what is
//! left to print is dropped and the command carries on (a run keeps committing its epochs).

/// Like `println!`, but a closed or broken stdout is ignored.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Like `eprintln!`, but a closed or broken stderr is ignored.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}
