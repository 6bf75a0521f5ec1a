//! A throwaway nginx (Debian's package) on loopback for the HTTP tests: one
//! plain port and two TLS ports (certificate for `localhost`/127.0.0.1 from
//! a test CA), static files, a WebDAV `PUT` area, a chunked download, and an
//! access log in JSON that records the credential headers the upstream
//! really received. Stopped and removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::forward::Certs;
use super::free_port;

pub const NGINX: &str = "/usr/sbin/nginx";

/// Size of `/big.bin`.
pub const BIG_BYTES: usize = 64 << 20;

/// `/customers.json`: emails and cards nested in objects and arrays.
pub const CUSTOMERS_JSON: &str = r#"{"count":2,"customers":[{"id":1,"name":"Ann","email":"ann@example.com","card":{"number":"4111111111111111","brand":"visa"},"notes":["call her","cc: bob@example.org"]},{"id":2,"name":"Raj","contact":{"emails":["raj@example.net","raj.work@example.net"]},"ssn":"123-45-6789","card":{"number":"5500005555555559"}}]}"#;

pub struct Nginx {
    pub dir: PathBuf,
    /// Plain HTTP.
    pub port: u16,
    /// TLS (for Warden's TLS origination).
    pub tls_port: u16,
    /// TLS (for Warden's TLS interception).
    pub tls_port2: u16,
    child: Option<Child>,
}

impl Nginx {
    pub fn start(dir: &Path, certs: &Certs) -> Self {
        assert!(
            Path::new(NGINX).exists(),
            "nginx is missing: run `cargo xtask setup` (installs Debian's nginx)"
        );
        let www = dir.join("www");
        for d in ["www/upload", "body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(www.join("customers.json"), CUSTOMERS_JSON).unwrap();
        std::fs::write(www.join("hello.txt"), "hello from nginx\n").unwrap();
        // Not all-zero, not masked (octet-stream), easy to check.
        let big: Vec<u8> = (0..BIG_BYTES).map(|i| (i % 251) as u8).collect();
        std::fs::write(www.join("big.bin"), &big).unwrap();
        let chunk: String = (0..200_000).map(|i| format!("line {i} zzz\n")).collect();
        std::fs::write(www.join("chunked.bin"), chunk).unwrap();
        let (port, tls_port, tls_port2) = (
            free_port("127.0.0.1"),
            free_port("127.0.0.1"),
            free_port("127.0.0.1"),
        );
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 1024; }}
http {{
    log_format j escape=json '{{"request":"$request","host":"$http_host","method":"$request_method","uri":"$request_uri","status":$status,"authorization":"$http_authorization","cookie":"$http_cookie","api_key":"$http_x_api_key","https":"$https","port":"$server_port","sni":"$ssl_server_name","bytes_sent":$body_bytes_sent,"request_length":$request_length,"transfer_encoding":"$http_transfer_encoding","remote":"$remote_addr:$remote_port"}}';
    access_log {dir}/access.log j;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    types {{ application/json json; text/plain txt; application/octet-stream bin; }}
    default_type application/octet-stream;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl;
        listen 127.0.0.1:{tls_port2} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {www};
        client_max_body_size 0;
        location /upload/ {{ dav_methods PUT DELETE; create_full_put_path on; }}
        location = /chunked.bin {{
            sub_filter 'zzz' 'yyy';
            sub_filter_once off;
            sub_filter_types *;
        }}
        location /admin/ {{ default_type text/plain; return 200 "admin area\n"; }}
        location /orders/ {{ default_type application/json; return 200 '{{"order":"done"}}'; }}
        location = /small {{ default_type text/plain; return 200 "ok\n"; }}
        location = /events.ndjson {{ default_type application/x-ndjson; return 200 '{{"email":"ann@example.com"}}\n'; }}
    }}
}}
"#,
            dir = dir.display(),
            www = www.display(),
            cert = certs.cert.display(),
            key = certs.key.display(),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut n = Nginx {
            dir: dir.to_owned(),
            port,
            tls_port,
            tls_port2,
            child: Some(child),
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", tls_port2)).is_err() {
            if let Some(s) = n.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("nginx exited ({s}): {}", n.error_log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nginx did not start: {}",
                n.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// Every request nginx answered, oldest first.
    ///
    /// nginx writes a request's line in its log phase, after the response has
    /// left: a client can see its answer before the line exists. The log is
    /// read until it has not changed for a moment (at most two seconds).
    pub fn access(&self) -> Vec<Value> {
        let read = || std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        let start = Instant::now();
        let mut last = read();
        let mut stable_since = Instant::now();
        while start.elapsed() < Duration::from_secs(2)
            && stable_since.elapsed() < Duration::from_millis(250)
        {
            std::thread::sleep(Duration::from_millis(25));
            let now = read();
            if now != last {
                last = now;
                stable_since = Instant::now();
            }
        }
        last.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Requests whose URI starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Value> {
        self.access()
            .into_iter()
            .filter(|r| r["uri"].as_str().is_some_and(|u| u.starts_with(prefix)))
            .collect()
    }

    pub fn www(&self) -> PathBuf {
        self.dir.join("www")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
