//! A throwaway nginx (Debian's package) on loopback for the bench and the
//! demo: one server on a free port with the caller's `location` blocks, no
//! access log, keep-alive without a request limit. Stopped on drop.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub const NGINX: &str = "/usr/sbin/nginx";

pub struct Nginx {
    pub port: u16,
    child: Child,
}

impl Nginx {
    /// Starts nginx with its files under `dir` and `locations` inside the
    /// server block; returns once it accepts connections.
    pub fn start(dir: &Path, locations: &str) -> Result<Self> {
        Self::start_with(dir, "", locations)
    }

    /// [`start`](Self::start) with `http_extra` (e.g. `upstream` blocks) in
    /// the `http` block.
    pub fn start_with(dir: &Path, http_extra: &str, locations: &str) -> Result<Self> {
        if !Path::new(NGINX).exists() {
            bail!("nginx is missing ({NGINX}): run `cargo xtask setup`");
        }
        std::fs::create_dir_all(dir.join("tmp"))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    {http_extra}
    server {{
        listen 127.0.0.1:{port} reuseport;
        {locations}
    }}
}}
"#,
                dir = dir.display()
            ),
        )?;
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let mut n = Nginx { port, child };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(s) = n.child.try_wait()? {
                bail!(
                    "nginx exited ({s}): {}",
                    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                );
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("nginx did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(n)
    }

    /// The nginx process (one process: `master_process off`).
    pub fn pid(&self) -> Option<u32> {
        Some(self.child.id())
    }

    pub fn version(&self) -> String {
        Command::new(NGINX)
            .arg("-v")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stderr)
                    .trim()
                    .trim_start_matches("nginx version: nginx/")
                    .to_owned()
            })
            .unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
