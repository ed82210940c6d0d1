//! What the process itself prints besides its logs: the startup lines of `serve` on stdout and
//! the final error on stderr. With `--log-format json` they are JSON objects shaped like the
//! log lines of `tracing-subscriber`'s JSON format (`timestamp`, `level`, `fields.message`,
//! `target`), so that every line on both streams parses as JSON and a log pipeline reads them
//! all alike.

use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};

/// Whether lines are JSON; set once at start from `--log-format`.
static JSON: AtomicBool = AtomicBool::new(false);

/// The `target` of these lines in JSON.
const TARGET: &str = "meshca";

/// Makes every later line JSON (`--log-format json`).
pub(crate) fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// A startup line on stdout: `meshca: MESSAGE` as text, an `INFO` object as JSON.
pub(crate) fn say(message: &str) {
    say_as("meshca", message);
}

/// A line on stdout: `WHO: MESSAGE` as text (`meshca agent: wrote ...`), an `INFO` object as
/// JSON.
pub(crate) fn say_as(who: &str, message: &str) {
    if JSON.load(Ordering::Relaxed) {
        println!("{}", json_line("INFO", message));
    } else {
        println!("{who}: {message}");
    }
}

/// The error that ends the process, on stderr: `meshca: MESSAGE` as text, an `ERROR` object
/// as JSON.
pub(crate) fn fail(message: &str) {
    if JSON.load(Ordering::Relaxed) {
        eprintln!("{}", json_line("ERROR", message));
    } else {
        eprintln!("meshca: {message}");
    }
}

fn json_line(level: &str, message: &str) -> String {
    let mut timestamp = String::new();
    // Writing to a String cannot fail; a clock that cannot be read leaves the field empty.
    let _ = SystemTime.format_time(&mut Writer::new(&mut timestamp));
    serde_json::json!({
        "timestamp": timestamp,
        "level": level,
        "fields": { "message": message },
        "target": TARGET,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_objects_with_the_message() {
        let line = json_line("ERROR", "error: \"quoted\"\nand a newline");
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["fields"]["message"], "error: \"quoted\"\nand a newline");
        assert_eq!(v["level"], "ERROR");
        assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}
