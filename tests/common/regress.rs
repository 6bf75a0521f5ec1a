//! PostgreSQL's own regression suite (`src/test/regress`) for the tests:
//! taken from Debian's source package of the installed server
//! (`apt-get source postgresql-15=<installed version>`) through a private
//! apt configuration (its own sources with `deb-src` lines, lists and
//! cache, all under the cache directory; the system's apt configuration is
//! only read), with `regress.so`, `autoinc.so` and `refint.so` built by
//! PGXS against the installed server's headers. Kept in a cache directory
//! reused across runs (`$WARDEN_TEST_CACHE`, default
//! `/var/cache/warden-tests`), made once under a lock.
//!
//! Also runs `pg_regress --use-existing` over the serial order of
//! `parallel_schedule` (what `make installcheck` does) and reads its
//! per-test outcomes.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::pg::{self, PgServer};

/// The regression suite of the installed server, ready to run.
pub struct Suite {
    /// `src/test/regress` of the source package (sql/, expected/, data/,
    /// parallel_schedule, resultmap): pg_regress's `--inputdir`.
    pub dir: PathBuf,
    /// `regress.so`, `autoinc.so`, `refint.so`: pg_regress's `--dlpath`.
    pub dlpath: PathBuf,
    /// Debian version of the server package the suite comes from.
    pub version: String,
    /// The installed server's bin directory (psql).
    pub bindir: PathBuf,
    /// `pg_regress` (shipped with PGXS in postgresql-client-N).
    pub pg_regress: PathBuf,
    /// Time spent fetching and building (zero when the cache had it).
    pub prepare: Duration,
}

/// Where fetched and built things are kept across runs.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("WARDEN_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/warden-tests"))
}

/// Bump when what is built changes, so an older cache is not used.
const BUILD_REV: u32 = 2;

/// The suite for the installed server, fetched and built on first use.
pub fn suite() -> Suite {
    let t0 = Instant::now();
    pg::ensure_packages();
    pg::ensure_apt(pg::REGRESS_PACKAGES);
    let bindir = pg::pg_bindir();
    let major = bindir
        .parent()
        .and_then(Path::file_name)
        .map(|v| v.to_string_lossy().into_owned())
        .expect("/usr/lib/postgresql/<major>/bin");
    let package = format!("postgresql-{major}");
    let version = pg::installed_version(&package)
        .unwrap_or_else(|| panic!("{package} is not installed as a Debian package"));
    let pkglibdir = output_ok(Command::new(bindir.join("pg_config")).arg("--pkglibdir"));
    let pg_regress = Path::new(pkglibdir.trim()).join("pgxs/src/test/regress/pg_regress");
    assert!(
        pg_regress.exists(),
        "{} missing (it comes with postgresql-client-{major})",
        pg_regress.display()
    );

    let cache = cache_dir();
    fs::create_dir_all(&cache).unwrap();
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o755)).unwrap();
    let root = cache.join(format!("{package}_{version}-r{BUILD_REV}"));
    let suite = |prepare| Suite {
        dir: root.join("regress"),
        dlpath: root.join("lib"),
        version: version.clone(),
        bindir: bindir.clone(),
        pg_regress: pg_regress.clone(),
        prepare,
    };
    let complete = root.join(".complete");
    if complete.exists() {
        return suite(Duration::ZERO);
    }
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(cache.join("regress.lock"))
        .unwrap();
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    if complete.exists() {
        return suite(Duration::ZERO);
    }
    eprintln!(
        "regress: fetching {package}={version} (source) into {}",
        cache.display()
    );
    let work = tempfile::Builder::new()
        .prefix("fetch-")
        .tempdir_in(&cache)
        .unwrap();
    apt_source(&cache, &package, &version, work.path());
    let tree = fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir() && p.join("src/test/regress/parallel_schedule").exists())
        .unwrap_or_else(|| panic!("no unpacked source tree in {}", work.path().display()));

    let building = PathBuf::from(format!("{}.building", root.display()));
    let _ = fs::remove_dir_all(&building);
    fs::create_dir_all(building.join("lib")).unwrap();
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(tree.join("src/test/regress"))
            .arg(building.join("regress")),
    );
    for src in [
        "src/test/regress/regress.c",
        "contrib/spi/autoinc.c",
        "contrib/spi/refint.c",
    ] {
        let name = Path::new(src).file_name().unwrap();
        fs::copy(tree.join(src), building.join("lib").join(name)).unwrap();
    }
    // What src/test/regress/GNUmakefile builds for `--dlpath`, through PGXS,
    // with contrib/spi's REFINT_VERBOSE (the expected output has its
    // notices); no bitcode: the server's JIT is not what is tested.
    fs::write(
        building.join("lib/Makefile"),
        format!(
            "MODULES = regress autoinc refint\nPG_CPPFLAGS = -DREFINT_VERBOSE\nPG_CONFIG = {}\nPGXS := $(shell $(PG_CONFIG) --pgxs)\ninclude $(PGXS)\n",
            bindir.join("pg_config").display()
        ),
    )
    .unwrap();
    run_ok(
        Command::new("make")
            .arg("-C")
            .arg(building.join("lib"))
            .arg("with_llvm=no"),
    );
    for m in ["regress.so", "autoinc.so", "refint.so"] {
        assert!(building.join("lib").join(m).exists(), "{m} was not built");
    }
    // The server (another user) reads data files and loads the modules.
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&building));
    drop(work);
    fs::write(building.join(".complete"), format!("{version}\n")).unwrap();
    let _ = fs::remove_dir_all(&root);
    fs::rename(&building, &root).unwrap();
    let s = suite(t0.elapsed());
    eprintln!("regress: suite ready in {:?}", s.prepare);
    s
}

/// `apt-get source <package>=<version>` into `into`, with apt's sources,
/// lists and cache in `<cache>/apt` (the system's configuration is read,
/// never changed): every `deb` source of the system, as `deb-src`.
fn apt_source(cache: &Path, package: &str, version: &str, into: &Path) {
    let apt = cache.join("apt");
    let parts = apt.join("sources.list.d");
    let _ = fs::remove_dir_all(&parts);
    fs::create_dir_all(&parts).unwrap();
    fs::create_dir_all(apt.join("lists/partial")).unwrap();
    fs::create_dir_all(apt.join("cache/archives/partial")).unwrap();
    let mut one_line = String::new();
    if let Ok(s) = fs::read_to_string("/etc/apt/sources.list") {
        one_line.push_str(&deb_src_lines(&s));
    }
    for e in fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(text) = fs::read_to_string(e.path()) else {
            continue;
        };
        if name.ends_with(".list") {
            one_line.push_str(&deb_src_lines(&text));
        } else if name.ends_with(".sources") {
            fs::write(parts.join(&name), deb_src_stanzas(&text)).unwrap();
        }
    }
    fs::write(apt.join("sources.list"), one_line).unwrap();
    let private = |c: &mut Command| {
        c.arg("-q")
            .arg("-o")
            .arg(format!(
                "Dir::Etc::SourceList={}",
                apt.join("sources.list").display()
            ))
            .arg("-o")
            .arg(format!("Dir::Etc::SourceParts={}", parts.display()))
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", apt.join("lists").display()))
            .arg("-o")
            .arg(format!("Dir::Cache={}", apt.join("cache").display()))
            // The files go to root-owned directories of ours.
            .args(["-o", "APT::Sandbox::User=root"]);
    };
    let mut update = Command::new("apt-get");
    private(&mut update);
    // A third-party source without deb-src makes update complain; what
    // matters is whether `source` then finds the package.
    let up = update.arg("update").output().unwrap();
    let mut source = Command::new("apt-get");
    private(&mut source);
    let out = source
        .arg("source")
        .arg(format!("{package}={version}"))
        .current_dir(into)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "apt-get source {package}={version}: {}\n(apt-get update said: {})",
        pg::show(&out),
        pg::show(&up)
    );
}

/// The `deb` lines of a one-line-style sources file, as `deb-src`.
fn deb_src_lines(text: &str) -> String {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("deb "))
        .map(|rest| format!("deb-src {rest}\n"))
        .collect()
}

/// The stanzas of a deb822 `.sources` file whose `Types` include `deb`,
/// with `Types: deb-src`; other stanzas (and `Enabled: no`) are left out.
fn deb_src_stanzas(text: &str) -> String {
    let mut out = String::new();
    for stanza in text.split("\n\n") {
        let mut types = None;
        let mut enabled = true;
        for l in stanza.lines() {
            if let Some((k, v)) = l.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "types" => types = Some(v.split_whitespace().any(|t| t == "deb")),
                    "enabled" => enabled = v.trim() != "no",
                    _ => {}
                }
            }
        }
        if types != Some(true) || !enabled {
            continue;
        }
        for l in stanza.lines() {
            if l.split_once(':')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("types"))
            {
                out.push_str("Types: deb-src\n");
            } else {
                out.push_str(l);
                out.push('\n');
            }
        }
        out.push('\n');
    }
    out
}

/// Creates `name` as pg_regress does without `--use-existing`
/// (`create_database` in pg_regress.c): from template0, with C messages,
/// money, numbers and times, hex bytea and the default zone abbreviations.
pub fn create_database(pg: &PgServer, name: &str) {
    pg.psql_ok(
        pg::SUPERUSER,
        "postgres",
        &format!("CREATE DATABASE \"{name}\" TEMPLATE=template0"),
    );
    let mut alter = String::new();
    for (k, v) in [
        ("lc_messages", "C"),
        ("lc_monetary", "C"),
        ("lc_numeric", "C"),
        ("lc_time", "C"),
        ("bytea_output", "hex"),
        ("timezone_abbreviations", "Default"),
    ] {
        alter.push_str(&format!("ALTER DATABASE \"{name}\" SET {k} TO '{v}';"));
    }
    pg.psql_ok(pg::SUPERUSER, "postgres", &alter);
}

/// How one test of the schedule ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    /// Failed, but `ignore:` in the schedule (`random`).
    FailedIgnored,
}

/// One pg_regress run.
pub struct Run {
    /// Every test in schedule order.
    pub tests: Vec<(String, Outcome)>,
    /// When each test's psql was launched (ms since the epoch), in order.
    pub starts: Vec<(i64, String)>,
    /// pg_regress's stdout and stderr.
    pub output: String,
    /// `--outputdir` (results/, regression.diffs).
    pub outdir: PathBuf,
    pub duration: Duration,
}

impl Run {
    pub fn passed(&self) -> Vec<&str> {
        self.tests
            .iter()
            .filter(|(_, o)| *o == Outcome::Ok)
            .map(|(t, _)| t.as_str())
            .collect()
    }

    pub fn outcome(&self, test: &str) -> Option<Outcome> {
        self.tests.iter().find(|(t, _)| t == test).map(|(_, o)| *o)
    }

    /// The test whose psql was the last to start at or before `time_ms`
    /// (tests run one at a time).
    pub fn test_at(&self, time_ms: i64) -> Option<&str> {
        let i = self.starts.partition_point(|(t, _)| *t <= time_ms);
        i.checked_sub(1).map(|i| self.starts[i].1.as_str())
    }

    /// `regression.diffs` (empty when every test passed).
    pub fn diffs(&self) -> String {
        fs::read_to_string(self.outdir.join("regression.diffs")).unwrap_or_default()
    }
}

/// `pg_regress --use-existing` over `parallel_schedule` one test at a time
/// (`--max-connections=1`, as `make installcheck`), or over `only` (test
/// names, in that order) when given, against database
/// `db`, with the connection settings in `env` (PGHOST, PGPORT, PGUSER,
/// and PGPASSWORD when there is one: nothing else of this process's
/// environment is passed). With `cgroup_procs`, pg_regress (and the psql
/// processes it starts) runs inside that cgroup. `outdir` must exist; it
/// receives results/ (the server writes there too: COPY TO a file) and
/// regression.diffs.
pub fn run(
    suite: &Suite,
    db: &str,
    env: &[(&str, String)],
    outdir: &Path,
    cgroup_procs: Option<&Path>,
    only: Option<&[String]>,
) -> Run {
    // The server (another user) writes server-side COPY output there.
    fs::create_dir_all(outdir.join("results")).unwrap();
    fs::set_permissions(outdir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(outdir.join("results"), fs::Permissions::from_mode(0o777)).unwrap();
    // Records when each test's psql starts (pg_regress names the test in
    // PGAPPNAME), so statements can be told apart by test.
    let starts = outdir.join("starts.log");
    let launcher = outdir.join("launcher.sh");
    fs::write(
        &launcher,
        format!(
            "#!/bin/sh\necho \"$(date +%s%3N) ${{PGAPPNAME#pg_regress/}}\" >> '{}'\nexec \"$@\"\n",
            starts.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&launcher, fs::Permissions::from_mode(0o755)).unwrap();
    let mut args: Vec<String> = vec![
        "--use-existing".into(),
        format!("--bindir={}", suite.bindir.display()),
        format!("--inputdir={}", suite.dir.display()),
        format!("--outputdir={}", outdir.display()),
        format!("--dlpath={}", suite.dlpath.display()),
        "--max-connections=1".into(),
        format!("--dbname={db}"),
        format!("--launcher={}", launcher.display()),
    ];
    match only {
        Some(tests) => args.extend(tests.iter().cloned()),
        None => args.push(format!(
            "--schedule={}",
            suite.dir.join("parallel_schedule").display()
        )),
    }
    let mut cmd = match cgroup_procs {
        Some(procs) => {
            let mut c = Command::new("sh");
            let mut script = format!(
                "echo $$ > '{}' && exec '{}'",
                procs.display(),
                suite.pg_regress.display()
            );
            for a in &args {
                script.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
            }
            c.arg("-c").arg(script);
            c
        }
        None => {
            let mut c = Command::new(&suite.pg_regress);
            c.args(std::mem::take(&mut args));
            c
        }
    };
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        // No password file: a missing one is ignored silently (libpq warns
        // about /dev/null, "not a plain file", in every test's output when
        // no password is given).
        .env("PGPASSFILE", outdir.join("no-pgpass"))
        .env("PGCONNECT_TIMEOUT", "30")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(outdir);
    let t = Instant::now();
    let out = cmd.output().unwrap();
    let duration = t.elapsed();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tests = parse_outcomes(&output);
    assert!(
        !tests.is_empty(),
        "pg_regress ran no test ({}):\n{output}",
        out.status
    );
    let mut starts: Vec<(i64, String)> = fs::read_to_string(&starts)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (t, name) = l.split_once(' ')?;
            Some((t.parse().ok()?, name.to_owned()))
        })
        .collect();
    starts.sort_by_key(|(t, _)| *t);
    Run {
        tests,
        starts,
        output,
        outdir: outdir.to_owned(),
        duration,
    }
}

/// Per-test outcomes from pg_regress's output: `test NAME ... ok  12 ms`,
/// and within parallel groups `     NAME ... FAILED  12 ms` /
/// `... failed (ignored)`.
pub fn parse_outcomes(output: &str) -> Vec<(String, Outcome)> {
    let mut tests = Vec::new();
    for line in output.lines() {
        let Some((name, rest)) = line.split_once(" ... ") else {
            continue;
        };
        let name = name.trim();
        let name = name.strip_prefix("test ").unwrap_or(name).trim();
        if name.is_empty() || name.contains(' ') {
            continue;
        }
        let rest = rest.trim_start();
        let outcome = if rest.starts_with("ok") {
            Outcome::Ok
        } else if rest.starts_with("failed (ignored)") {
            Outcome::FailedIgnored
        } else if rest.starts_with("FAILED") {
            Outcome::Failed
        } else {
            continue;
        };
        tests.push((name.to_owned(), outcome));
    }
    tests
}

/// Counts by key, largest first.
pub fn tally<'a>(keys: impl IntoIterator<Item = &'a str>) -> Vec<(String, usize)> {
    let mut m: BTreeMap<&str, usize> = BTreeMap::new();
    for k in keys {
        *m.entry(k).or_default() += 1;
    }
    let mut v: Vec<(String, usize)> = m.into_iter().map(|(k, n)| (k.to_owned(), n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

fn run_ok(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?}: {}", pg::show(&out));
    out
}

fn output_ok(c: &mut Command) -> String {
    String::from_utf8_lossy(&run_ok(c).stdout).into_owned()
}
