//! The process's own figures, read from /proc at scrape time.

use nix::sys::resource::{getrlimit, Resource};
use nix::unistd::{sysconf, SysconfVar};

#[derive(Default)]
pub struct Sample {
    pub cpu_seconds: f64,
    pub rss_bytes: i64,
    pub vsize_bytes: i64,
    pub open_fds: i64,
    pub max_fds: i64,
    pub threads: i64,
}

impl Sample {
    pub fn read() -> Sample {
        let mut p = Sample::default();
        let conf = |v| sysconf(v).ok().flatten().unwrap_or(0);
        let (tick, page) = (conf(SysconfVar::CLK_TCK), conf(SysconfVar::PAGE_SIZE));
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the parenthesised command name, which may contain spaces.
            if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) {
                let f: Vec<&str> = rest.split(' ').collect();
                let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                if tick > 0 {
                    p.cpu_seconds = (num(11) + num(12)) / tick as f64;
                }
                p.threads = num(17) as i64;
                p.vsize_bytes = num(20) as i64;
                p.rss_bytes = num(21) as i64 * page.max(0);
            }
        }
        p.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
        if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
            p.max_fds = soft.min(i64::MAX as u64) as i64;
        }
        p
    }
}
