//! The conventional `process_*` metrics of the agent itself, read from
//! `/proc/self` at scrape time (the names every Prometheus client exports).

use super::Reading;

/// `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
/// `process_threads`, `process_start_time_seconds`. A file that cannot be
/// read leaves its metrics out rather than reporting zero.
pub fn readings() -> Vec<Reading> {
    let mut out = Vec::new();
    let ticks = clock_ticks();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        && let Some(s) = parse_stat(&stat)
    {
        out.push(Reading::counter(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            (s.utime + s.stime) as f64 / ticks,
        ));
        out.push(Reading::gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            s.vsize as f64,
        ));
        out.push(Reading::gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            (s.rss_pages * page_size()) as f64,
        ));
        out.push(Reading::gauge(
            "process_threads",
            "Number of OS threads in the process.",
            s.threads as f64,
        ));
        if let Some(boot) = boot_time() {
            out.push(Reading::gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                boot as f64 + s.starttime as f64 / ticks,
            ));
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        out.push(Reading::gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            dir.count() as f64,
        ));
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits")
        && let Some(max) = max_fds(&limits)
    {
        out.push(Reading::gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            max as f64,
        ));
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    threads: u64,
    starttime: u64,
    vsize: u64,
    rss_pages: u64,
}

/// Fields of `/proc/<pid>/stat` after the `(comm)` (which may hold spaces
/// and parentheses, so the split starts after the last `)`).
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); field N is f[N - 3].
    let n = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        utime: n(14)?,
        stime: n(15)?,
        threads: n(20)?,
        starttime: n(22)?,
        vsize: n(23)?,
        rss_pages: n(24)?,
    })
}

fn max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

fn clock_ticks() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

fn page_size() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(p)) if p > 0 => p as u64,
        _ => 4096,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_read_after_the_last_parenthesis() {
        let line = "4242 (a) b) (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 \
                    123456 1000000 2500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime: 250,
                stime: 50,
                threads: 7,
                starttime: 123456,
                vsize: 1_000_000,
                rss_pages: 2500,
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_metrics_are_read() {
        let names: Vec<&str> = readings().iter().map(|r| r.name).collect();
        for want in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_fds(limits), Some(1024));
    }
}
