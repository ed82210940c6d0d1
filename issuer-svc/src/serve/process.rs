//! The standard `process_*` metrics (as the Go and Python Prometheus clients name them), which
//! `prometheus-client` does not provide: read at scrape time from `/proc/self/stat`,
//! `/proc/self/statm`, `/proc/self/fd` and `/proc/stat`. Linux only: elsewhere, or when a file
//! cannot be read, the affected series are left out.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// The process figures of one scrape; `None` where the source could not be read.
#[derive(Debug, Default, PartialEq)]
struct Figures {
    /// `utime + stime` of `/proc/self/stat`, in seconds.
    cpu_seconds: Option<f64>,
    /// Boot time (`/proc/stat`) plus `starttime` of `/proc/self/stat`.
    start_time_seconds: Option<f64>,
    /// Resident pages of `/proc/self/statm`, in bytes.
    resident_bytes: Option<u64>,
    /// Total pages of `/proc/self/statm`, in bytes.
    virtual_bytes: Option<u64>,
    /// Entries of `/proc/self/fd`.
    open_fds: Option<u64>,
    /// The soft `RLIMIT_NOFILE`.
    max_fds: Option<u64>,
}

/// `utime + stime` and `starttime` (clock ticks, man 5 proc) from the text of
/// `/proc/self/stat`.
fn parse_stat(stat: &str) -> Option<(u64, u64, u64)> {
    // The command (field 2) may hold spaces and parentheses: split after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field N is at index N - 3.
    let utime = fields.get(11)?.parse().ok()?;
    let stime = fields.get(12)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((utime, stime, start))
}

/// Total and resident size (pages) from the text of `/proc/self/statm`.
fn parse_statm(statm: &str) -> Option<(u64, u64)> {
    let mut it = statm.split_whitespace();
    let size = it.next()?.parse().ok()?;
    let resident = it.next()?.parse().ok()?;
    Some((size, resident))
}

/// The boot time (`btime`, seconds since the epoch) from the text of `/proc/stat`.
fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Lossy conversion of a tick or page count to `f64` (exact below 2^53).
#[allow(clippy::cast_precision_loss)]
fn as_f64(n: u64) -> f64 {
    n as f64
}

impl Figures {
    /// Reads this process's figures.
    fn read() -> Self {
        let mut f = Self::default();
        let ticks = rustix::param::clock_ticks_per_second();
        if ticks > 0 {
            let stat = std::fs::read_to_string("/proc/self/stat").ok();
            if let Some((utime, stime, start)) = stat.as_deref().and_then(parse_stat) {
                f.cpu_seconds = Some(as_f64(utime.saturating_add(stime)) / as_f64(ticks));
                let boot = std::fs::read_to_string("/proc/stat").ok();
                if let Some(btime) = boot.as_deref().and_then(parse_btime) {
                    f.start_time_seconds = Some(as_f64(btime) + as_f64(start) / as_f64(ticks));
                }
            }
        }
        let page = u64::try_from(rustix::param::page_size()).unwrap_or(4096);
        let statm = std::fs::read_to_string("/proc/self/statm").ok();
        if let Some((size, resident)) = statm.as_deref().and_then(parse_statm) {
            f.virtual_bytes = Some(size.saturating_mul(page));
            f.resident_bytes = Some(resident.saturating_mul(page));
        }
        // The directory's own descriptor, open while it is read, is counted too (as the other
        // clients do).
        f.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| u64::try_from(d.count()).unwrap_or(u64::MAX));
        f.max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        f
    }
}

/// Writes the `process_*` metrics on each scrape (see the module docs).
#[derive(Debug)]
pub(crate) struct ProcessCollector;

/// Writes one unlabelled gauge when `value` is known.
fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: Option<V>,
) -> Result<(), std::fmt::Error> {
    if let Some(v) = value {
        let g = ConstGauge::new(v);
        g.encode(encoder.encode_descriptor(name, help, unit, g.metric_type())?)?;
    }
    Ok(())
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let f = Figures::read();
        if let Some(cpu) = f.cpu_seconds {
            let c = ConstCounter::new(cpu);
            c.encode(encoder.encode_descriptor(
                "process_cpu",
                "User and system CPU time spent.",
                Some(&Unit::Seconds),
                c.metric_type(),
            )?)?;
        }
        gauge(
            &mut encoder,
            "process_start_time",
            "Start time of the process since the epoch.",
            Some(&Unit::Seconds),
            f.start_time_seconds,
        )?;
        gauge(
            &mut encoder,
            "process_resident_memory",
            "Resident memory size.",
            Some(&Unit::Bytes),
            f.resident_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory",
            "Virtual memory size.",
            Some(&Unit::Bytes),
            f.virtual_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Open file descriptors.",
            None,
            f.open_fds,
        )?;
        gauge(
            &mut encoder,
            "process_max_fds",
            "Limit of open file descriptors (RLIMIT_NOFILE, soft).",
            None,
            f.max_fds,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_command_with_spaces_and_parentheses() {
        let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 1 0 12345 100 200";
        assert_eq!(parse_stat(stat), Some((150, 50, 12345)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn statm_and_btime() {
        assert_eq!(parse_statm("1000 250 30 1 0 400 0\n"), Some((1000, 250)));
        assert_eq!(
            parse_btime("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_read() {
        let f = Figures::read();
        assert!(f.cpu_seconds.is_some());
        assert!(f.start_time_seconds.is_some_and(|t| t > 1.0e9));
        assert!(f.resident_bytes.is_some_and(|b| b > 0));
        assert!(f.open_fds.is_some_and(|n| n >= 3));
        assert!(f.max_fds.is_some());
    }
}
