//! Process facts for one connection, read once from `/proc/<tgid>`: exe path,
//! exe SHA-256 (cached by device, inode, size and mtime), cmdline and start
//! time, checked against the kernel's record so that a pid reused after the
//! caller exited is detected instead of trusted.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use warden_common::{ConnMeta, InodeKey, MATCH_CGROUP, PROC_FILE, PROC_PREEXISTING};

use crate::ebpf::{ProcLookup, cgroup, keys};

/// Longest cmdline kept (arguments beyond it are cut, and it says so).
const MAX_CMDLINE: usize = 1024;
/// Most cached executable hashes; the cache is cleared when it fills.
const MAX_CACHED_HASHES: usize = 4096;

/// What Warden knows about the caller of one connection. Facts that could
/// not be read, or cannot be trusted, are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessFacts {
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: Option<String>,
    pub exe: Option<String>,
    pub exe_sha256: Option<String>,
    pub cmdline: Option<String>,
    /// Process start, nanoseconds since boot (CLOCK_BOOTTIME).
    pub start_boot_ns: Option<u64>,
    pub cgroup_id: u64,
    pub cgroup_path: Option<String>,
    /// The pid now belongs to a process that started after the connect: the
    /// /proc facts above were discarded.
    pub pid_reused: bool,
    /// The process exec'ed another program after its connect (the kernel
    /// recorded the exec): exe, digest and command line read now are not
    /// what connected, and were discarded.
    pub exec_after_connect: bool,
    /// `/proc/<pid>/exe` is not the file the process exec'ed (recorded by
    /// the kernel at exec, inherited at fork): it was pointed elsewhere
    /// with `prctl(PR_SET_MM)`. Exe, digest and command line were discarded.
    pub exe_replaced: bool,
    /// The kernel keeps a record of what every process runs, and has none
    /// for this live one (it could not be stored): what it runs cannot be
    /// confirmed. Exe, digest and command line were discarded.
    pub exec_unrecorded: bool,
}

/// Whether a file with `st_dev` `dev` and inode `ino` is `want`, the file the
/// kernel recorded at exec (its superblock's device). On btrfs (per-subvolume
/// devices) and overlayfs (the underlying layer's device) `stat` reports
/// another device than the superblock's: there only the inode number is
/// compared (`devices_differ` says whether the file lives on one of those).
fn is_exec_file(want: InodeKey, dev: u64, ino: u64, devices_differ: impl Fn() -> bool) -> bool {
    ino == want.ino && (crate::ebpf::lsm::kernel_dev(dev) == want.dev || devices_differ())
}

/// The file behind `path` is on btrfs or overlayfs.
fn subvolume_devices(path: &Path) -> bool {
    const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;
    const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
    nix::sys::statfs::statfs(path).is_ok_and(|s| {
        // `__fsword_t` is i64 here, narrower on some targets.
        #[allow(clippy::unnecessary_cast)]
        let t = s.filesystem_type().0 as i64;
        t == BTRFS_SUPER_MAGIC || t == OVERLAYFS_SUPER_MAGIC
    })
}

/// A file's identity: device, inode, size, mtime seconds and nanoseconds.
type FileIdentity = (u64, u64, u64, i64, i64);

/// Executable hashes by file identity, so a busy binary is hashed once.
#[derive(Debug, Default)]
pub struct ExeHashCache {
    map: Mutex<HashMap<FileIdentity, String>>,
}

impl ExeHashCache {
    /// SHA-256 of the file behind `path` (opened once; identity from fstat).
    pub fn hash(&self, path: &Path) -> io::Result<String> {
        self.hash_with_identity(path).map(|(h, _)| h)
    }

    /// [`ExeHashCache::hash`], and the device (`st_dev`) and inode of the
    /// very file that was hashed.
    pub fn hash_with_identity(&self, path: &Path) -> io::Result<(String, (u64, u64))> {
        let mut f = File::open(path)?;
        let m = f.metadata()?;
        let key = (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec());
        let id = (m.dev(), m.ino());
        if let Some(h) = lock(&self.map).get(&key) {
            return Ok((h.clone(), id));
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let h = hex::encode(hasher.finalize());
        let mut map = lock(&self.map);
        if map.len() >= MAX_CACHED_HASHES {
            map.clear();
        }
        map.insert(key, h.clone());
        Ok((h, id))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned cache is still a valid cache (each insert is one call).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads the facts (blocking: call from `spawn_blocking`). `enrolled_path`
/// is the enrolled cgroup the kernel matched, used when /proc cannot tell.
pub fn read_facts(
    meta: &ConnMeta,
    cgroup_mount: &Path,
    enrolled_path: Option<&str>,
    cache: &ExeHashCache,
    proc_record: impl Fn(u32) -> ProcLookup,
) -> ProcessFacts {
    let tgid = meta.tgid;
    let comm = keys::comm(meta);
    let mut f = ProcessFacts {
        pid: meta.pid,
        tgid,
        uid: meta.uid,
        gid: meta.gid,
        comm: (!comm.is_empty()).then_some(comm),
        cgroup_id: meta.cgroup_id,
        ..Default::default()
    };
    let enrolled_fallback = || {
        (meta.match_kind == MATCH_CGROUP && meta.matched_id == meta.cgroup_id)
            .then(|| enrolled_path.map(str::to_owned))
            .flatten()
    };
    let proc_dir = format!("/proc/{tgid}");
    let before = start_boot_ns(&proc_dir);
    let Some(started) = before else {
        // The process is gone: only what the kernel recorded remains.
        f.cgroup_path = enrolled_fallback();
        return f;
    };
    if started > meta.ts_ns.saturating_add(clock_tick_ns()) {
        f.pid_reused = true;
        f.cgroup_path = enrolled_fallback();
        return f;
    }
    f.start_boot_ns = Some(started);
    f.exe = fs::read_link(format!("{proc_dir}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let hashed = cache
        .hash_with_identity(Path::new(&format!("{proc_dir}/exe")))
        .ok();
    f.exe_sha256 = hashed.as_ref().map(|(h, _)| h.clone());
    f.cmdline = read_cmdline(&proc_dir);
    f.cgroup_path = cgroup::process_cgroup_path(tgid)
        .ok()
        .filter(|p| {
            cgroup::cgroup_id(&cgroup::cgroup_dir(cgroup_mount, p)).ok() == Some(meta.cgroup_id)
        })
        .or_else(enrolled_fallback);
    // What was read must be what connected: the kernel's record of the
    // process (read after the /proc reads, so an exec before them is never
    // missed) must show no exec since the connect, and the file it exec'ed
    // must be the one hashed (a process can point /proc/<pid>/exe at another
    // file without an exec).
    let discard = |f: ProcessFacts| ProcessFacts {
        exe: None,
        exe_sha256: None,
        cmdline: None,
        ..f
    };
    match proc_record(tgid) {
        ProcLookup::Untracked => {}
        ProcLookup::Missing => {
            return discard(ProcessFacts {
                exec_unrecorded: true,
                ..f
            });
        }
        ProcLookup::Found(rec) => {
            if rec.exec_ns > meta.ts_ns {
                return discard(ProcessFacts {
                    exec_after_connect: true,
                    ..f
                });
            }
            if rec.flags & PROC_FILE != 0 {
                let want = InodeKey {
                    ino: rec.ino,
                    dev: rec.dev,
                    _pad: 0,
                };
                let same = hashed.is_some_and(|(_, (dev, ino))| {
                    is_exec_file(want, dev, ino, || {
                        subvolume_devices(Path::new(&format!("{proc_dir}/exe")))
                    })
                });
                if !same {
                    return discard(ProcessFacts {
                        exe_replaced: true,
                        ..f
                    });
                }
            } else if rec.flags & PROC_PREEXISTING == 0 {
                // Recorded at an exec whose file could not be read.
                return discard(ProcessFacts {
                    exec_unrecorded: true,
                    ..f
                });
            }
        }
    }
    // The same process must still be there after the reads.
    if start_boot_ns(&proc_dir) != Some(started) {
        return ProcessFacts {
            pid_reused: true,
            exe: None,
            exe_sha256: None,
            cmdline: None,
            start_boot_ns: None,
            cgroup_path: enrolled_fallback(),
            ..f
        };
    }
    f
}

/// Start time of the process in nanoseconds since boot (field 22 of
/// `/proc/<pid>/stat`, in clock ticks).
fn start_boot_ns(proc_dir: &str) -> Option<u64> {
    let stat = fs::read_to_string(format!("{proc_dir}/stat")).ok()?;
    parse_start_ticks(&stat).map(|t| t.saturating_mul(clock_tick_ns()))
}

/// Field 22 of a stat line; the comm (field 2) may contain spaces and
/// parentheses, so fields are counted after its last ')'.
fn parse_start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')' come field 3 (state) onwards; starttime is field 22.
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

fn clock_tick_ns() -> u64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&v| v > 0)
        .unwrap_or(100) as u64;
    1_000_000_000 / hz
}

fn read_cmdline(proc_dir: &str) -> Option<String> {
    let raw = fs::read(format!("{proc_dir}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let mut s = redact_secret_args(args).join(" ");
    if s.len() > MAX_CMDLINE {
        let mut cut = MAX_CMDLINE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(" …");
    }
    Some(s)
}

/// Replaced argument values in command lines.
const REDACTED_ARG: &str = "[MASKED]";
/// Header names whose values are credentials (`-H 'Cookie: …'`).
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
];
/// Flag name parts whose values are credentials (`--password=…`,
/// `--token …`, curl's `-u user:pw` and `-b cookie`).
const SECRET_FLAG_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "cookie",
    "apikey",
    "api-key",
    "api_key",
    "auth",
    "credential",
];
/// Short flags whose value is a credential (curl's `-b cookie`).
const SECRET_SHORT_FLAGS: &[&str] = &["-b"];
/// Flags whose value may be `user:password` (curl's `-u`): the part after
/// the first `:` is a credential.
const USER_FLAGS: &[&str] = &["-u", "--user", "--proxy-user"];

/// What the argument after a flag is.
#[derive(Clone, Copy, PartialEq)]
enum NextArg {
    Plain,
    Secret,
    UserPassword,
}

/// Command-line arguments with credential values replaced, one argument at
/// a time (before they are joined, so a value's extent is known): header
/// arguments of credential headers keep their name, `--flag=value` and
/// `--flag value` forms of credential-looking flags lose the value, and
/// `-u user:password` keeps the user. The built-in masking detectors run on
/// the joined line afterwards.
fn redact_secret_args(args: Vec<String>) -> Vec<String> {
    let secret_flag = |name: &str| {
        let name = name.to_ascii_lowercase();
        SECRET_SHORT_FLAGS.contains(&name.as_str())
            || name.starts_with("--")
                && !USER_FLAGS.contains(&name.as_str())
                && SECRET_FLAG_WORDS.iter().any(|w| name.contains(w))
    };
    let user_password = |v: &str| match v.split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED_ARG}"),
        None => v.to_owned(),
    };
    let mut out = Vec::with_capacity(args.len());
    let mut next = NextArg::Plain;
    for a in args {
        match std::mem::replace(&mut next, NextArg::Plain) {
            NextArg::Secret => {
                out.push(REDACTED_ARG.to_owned());
                continue;
            }
            NextArg::UserPassword => {
                out.push(user_password(&a));
                continue;
            }
            NextArg::Plain => {}
        }
        if let Some((name, _)) = a.split_once(':')
            && SECRET_HEADERS.contains(&name.trim().to_ascii_lowercase().as_str())
        {
            out.push(format!("{}: {REDACTED_ARG}", name.trim()));
            continue;
        }
        if !a.starts_with('-') {
            out.push(a);
            continue;
        }
        let (flag, value) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (a.as_str(), None),
        };
        let kind = if USER_FLAGS.contains(&flag) {
            NextArg::UserPassword
        } else if secret_flag(flag) {
            NextArg::Secret
        } else {
            NextArg::Plain
        };
        match (kind, value) {
            (NextArg::Plain, _) => out.push(a),
            (NextArg::Secret, Some(_)) => out.push(format!("{flag}={REDACTED_ARG}")),
            (NextArg::UserPassword, Some(v)) => out.push(format!("{flag}={}", user_password(v))),
            (k, None) => {
                out.push(a);
                next = k;
            }
        }
    }
    out
}

/// Boot-clock nanoseconds now (CLOCK_BOOTTIME), for tests and callers that
/// build a record by hand.
pub fn boot_ns_now() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        Ok(ts) => (ts.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec() as u64),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_common::ProcRecord;

    fn own_meta(ts_ns: u64) -> ConnMeta {
        let mut m = ConnMeta {
            tgid: std::process::id(),
            pid: std::process::id(),
            ts_ns,
            ..Default::default()
        };
        m.comm[..4].copy_from_slice(b"test");
        m
    }

    #[test]
    fn own_process_is_described_and_hashed() {
        let cache = ExeHashCache::default();
        let f = read_facts(
            &own_meta(boot_ns_now()),
            Path::new("/nonexistent"),
            None,
            &cache,
            |_| ProcLookup::Untracked,
        );
        assert!(!f.pid_reused);
        assert!(!f.exec_after_connect);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(f.exe.as_deref(), exe.to_str());
        let bytes = fs::read(&exe).unwrap();
        assert_eq!(f.exe_sha256, Some(hex::encode(Sha256::digest(&bytes))));
        assert!(f.cmdline.is_some());
        assert!(f.start_boot_ns.unwrap() <= boot_ns_now());
        assert_eq!(f.comm.as_deref(), Some("test"));
        // The cgroup cannot be confirmed under a bogus mount: not guessed.
        assert_eq!(f.cgroup_path, None);
        // Second time from the cache: same answer.
        assert_eq!(cache.hash(&exe).unwrap(), f.exe_sha256.unwrap());
    }

    #[test]
    fn a_pid_reused_after_the_connect_is_not_trusted() {
        // The kernel's record says the connect happened at boot time 1 ns,
        // long before this process started: this pid is not the caller.
        let f = read_facts(
            &ConnMeta {
                match_kind: MATCH_CGROUP,
                cgroup_id: 7,
                matched_id: 7,
                ..own_meta(1)
            },
            Path::new("/sys/fs/cgroup"),
            Some("/app.slice/x"),
            &ExeHashCache::default(),
            |_| ProcLookup::Untracked,
        );
        assert!(f.pid_reused);
        assert_eq!(f.exe, None);
        assert_eq!(f.exe_sha256, None);
        assert_eq!(f.cmdline, None);
        assert_eq!(f.cgroup_path.as_deref(), Some("/app.slice/x"));
    }

    #[test]
    fn an_exec_after_the_connect_discards_what_proc_shows_now() {
        let connected = boot_ns_now();
        let me = std::process::id();
        // The kernel saw this process exec after the connect: what /proc
        // shows now is another program than the one that connected.
        let exec_at = |exec_ns| {
            move |tgid| match tgid == me {
                true => ProcLookup::Found(ProcRecord {
                    exec_ns,
                    flags: PROC_PREEXISTING,
                    ..ProcRecord::default()
                }),
                false => ProcLookup::Missing,
            }
        };
        let f = read_facts(
            &own_meta(connected),
            Path::new("/nonexistent"),
            None,
            &ExeHashCache::default(),
            exec_at(connected + 1),
        );
        assert!(f.exec_after_connect && !f.pid_reused);
        assert_eq!((f.exe, f.exe_sha256, f.cmdline), (None, None, None));
        assert_eq!(f.tgid, me);
        // An exec before the connect is the program that connected.
        let f = read_facts(
            &own_meta(connected),
            Path::new("/nonexistent"),
            None,
            &ExeHashCache::default(),
            exec_at(connected - 1),
        );
        assert!(!f.exec_after_connect);
        assert!(f.exe.is_some());
    }

    #[test]
    fn an_exe_other_than_the_exec_ed_file_is_not_trusted() {
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap();
        let real = crate::ebpf::lsm::inode_key(&exe).unwrap();
        let read = |recorded: InodeKey| {
            read_facts(
                &own_meta(boot_ns_now()),
                Path::new("/nonexistent"),
                None,
                &ExeHashCache::default(),
                move |tgid| match tgid == me {
                    true => ProcLookup::Found(ProcRecord {
                        exec_ns: 1,
                        ino: recorded.ino,
                        dev: recorded.dev,
                        flags: PROC_FILE,
                    }),
                    false => ProcLookup::Missing,
                },
            )
        };
        // The kernel recorded this very file at exec: trusted.
        let f = read(real);
        assert!(!f.exe_replaced && f.exe.is_some());
        // It recorded another file: /proc/<pid>/exe was pointed elsewhere.
        let f = read(InodeKey {
            ino: real.ino + 1,
            ..real
        });
        assert!(f.exe_replaced);
        assert_eq!((f.exe, f.exe_sha256, f.cmdline), (None, None, None));
    }

    #[test]
    fn a_live_process_without_a_record_is_not_trusted() {
        // Every process has a record while they are kept: a live caller
        // without one (its record could not be stored) cannot be confirmed.
        let read = |lookup: ProcLookup| {
            read_facts(
                &own_meta(boot_ns_now()),
                Path::new("/nonexistent"),
                None,
                &ExeHashCache::default(),
                move |_| lookup,
            )
        };
        let f = read(ProcLookup::Missing);
        assert!(f.exec_unrecorded && !f.exe_replaced && !f.exec_after_connect);
        assert_eq!((f.exe, f.exe_sha256, f.cmdline), (None, None, None));
        // Recorded at an exec whose file could not be read: the same.
        let f = read(ProcLookup::Found(ProcRecord::default()));
        assert!(f.exec_unrecorded);
        assert_eq!(f.exe, None);
        // A process that predates the records is checked as before.
        let f = read(ProcLookup::Found(ProcRecord {
            flags: PROC_PREEXISTING,
            ..ProcRecord::default()
        }));
        assert!(!f.exec_unrecorded && f.exe.is_some());
        // Not kept at all (the programs are not attached): as before.
        let f = read(ProcLookup::Untracked);
        assert!(!f.exec_unrecorded && f.exe.is_some());
    }

    #[test]
    fn exec_file_devices_are_compared_except_where_stat_reports_another() {
        let want = InodeKey {
            ino: 42,
            dev: (8 << 20) | 1,
            _pad: 0,
        };
        let sda1 = nix::sys::stat::makedev(8, 1);
        assert!(is_exec_file(want, sda1, 42, || false));
        assert!(!is_exec_file(want, sda1, 43, || true));
        let anon = nix::sys::stat::makedev(0, 51);
        assert!(!is_exec_file(want, anon, 42, || false));
        assert!(is_exec_file(want, anon, 42, || true));
    }

    #[test]
    fn vanished_process_keeps_kernel_facts_only() {
        let meta = ConnMeta {
            tgid: u32::MAX - 1,
            pid: u32::MAX - 1,
            uid: 1001,
            ts_ns: boot_ns_now(),
            ..Default::default()
        };
        let f = read_facts(
            &meta,
            Path::new("/sys/fs/cgroup"),
            None,
            &ExeHashCache::default(),
            |_| ProcLookup::Untracked,
        );
        assert_eq!(f.exe, None);
        assert_eq!(f.uid, 1001);
        assert!(!f.pid_reused);
    }

    #[test]
    fn stat_start_time_survives_odd_comms() {
        let line =
            "1234 (a) b (c)) S 1 1234 1234 0 -1 4194304 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 50";
        assert_eq!(parse_start_ticks(line), Some(987_654));
        assert_eq!(parse_start_ticks("garbage"), None);
    }

    #[test]
    fn credential_arguments_are_redacted() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let got = redact_secret_args(args(&[
            "curl",
            "-H",
            "Cookie: session=abc",
            "-H",
            "authorization : Basic dXNlcjpwdw==",
            "-H",
            "Accept: text/plain",
            "-u",
            "bob:hunter2",
            "-p",
            "5432",
            "--db-password=hunter3",
            "--token",
            "t0k",
            "--verbose",
            "http://x/",
        ]))
        .join(" ");
        assert_eq!(
            got,
            "curl -H Cookie: [MASKED] -H authorization: [MASKED] -H Accept: text/plain \
             -u bob:[MASKED] -p 5432 --db-password=[MASKED] --token [MASKED] --verbose http://x/"
        );
        for secret in ["abc", "dXNlcjpwdw", "hunter2", "hunter3", "t0k"] {
            assert!(!got.contains(secret), "{secret} in {got}");
        }
    }

    #[test]
    fn long_cmdlines_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = b"prog\0".to_vec();
        raw.extend(std::iter::repeat_n(b'x', 5000));
        raw.push(0);
        fs::write(dir.path().join("cmdline"), raw).unwrap();
        let c = read_cmdline(dir.path().to_str().unwrap()).unwrap();
        assert!(c.starts_with("prog xxx"));
        assert!(c.ends_with(" …"));
        assert!(c.len() <= MAX_CMDLINE + 4);
    }
}
