//! The CPU time of the DistriQueue processes on this machine, read from /proc, for `bench`'s
//! report of the server's CPU seconds per 1,000 jobs (issue 13). Linux only; elsewhere (no
//! /proc) every figure is 0.

/// The unit of /proc/<pid>/stat's times: USER_HZ, 100 in Linux's userspace ABI on every
/// architecture (`getconf CLK_TCK`).
const TICKS_PER_SECOND: f64 = 100.0;

/// True when `server` (an `http(s)://host:port` URL) names this machine: `localhost` or a
/// loopback address.
pub fn is_local(server: &str) -> bool {
    let authority = server
        .split_once("://")
        .map_or(server, |(_, rest)| rest)
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The CPU seconds (user and system, all threads) used so far by every process named
/// `distriqueue` on this machine but this one. A process that ends between two readings takes
/// its time with it: start the servers before the bench and stop them after.
pub fn server_cpu_seconds() -> f64 {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()) && *pid != me)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "distriqueue")
        })
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| cpu_ticks(&stat))
        .sum::<u64>() as f64
        / TICKS_PER_SECOND
}

/// `utime + stime` of a /proc/<pid>/stat line (fields 14 and 15; the command name, field 2,
/// may hold spaces and parentheses, so fields are counted after its last `)`).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_local_and_others_are_not() {
        for url in [
            "http://127.0.0.1:8082",
            "https://localhost:8082/",
            "http://[::1]:8082",
            "http://127.0.0.2",
            "LOCALHOST:1",
        ] {
            assert!(is_local(url), "{url}");
        }
        for url in [
            "http://10.0.0.1:8082",
            "https://gateway.example:443",
            "http://[2001:db8::1]:80",
        ] {
            assert!(!is_local(url), "{url}");
        }
    }

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "42 (distri queue) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("garbage"), None);
    }
}
