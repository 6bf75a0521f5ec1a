//! The demo's HTTP act: a throwaway nginx on loopback stands in for a
//! payments API; Warden is restarted with `config/demo.toml` plus an `http`
//! target and a grant for the /warden-demo/billing-job cgroup (bearer
//! credential from a 0600 file, a path policy, JSON masking). A workload
//! there calls the API with curl: the upstream sees Warden's credential, not
//! the workload's; e-mails and card numbers come back masked; a
//! percent-encoded `/admin` is refused with 403 naming the rule. Then
//! `warden audit tail` and `warden audit verify`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::{Cleanup, STATE, step};
use crate::nginx::Nginx;

/// The workload's cgroup under the demo's cgroup.
pub const CGROUP: &str = "billing-job";
const ACCOUNT: &str = "billing-job";
const TOKEN: &str = "demo-payments-token-from-warden";

const LOCATIONS: &str = r#"
        location = /v1/customers {
            default_type application/json;
            return 200 '{"customers":[{"id":1,"name":"Ann","email":"ann@example.com","card":"4111 1111 1111 1111"},{"id":2,"name":"Raj","email":"raj@example.net","card":"5500 0055 5555 5559"}]}';
        }
        location = /v1/whoami {
            default_type text/plain;
            return 200 "payments-api saw Authorization: $http_authorization\n";
        }
        location /admin/ { default_type text/plain; return 200 "admin area\n"; }
"#;

pub fn act(root: &Path, guard: &mut Cleanup, mount: &Path) -> Result<()> {
    println!("\n\n######## HTTP act");
    let dir = Path::new(STATE).join("http");
    std::fs::create_dir_all(&dir)?;
    step("a throwaway nginx on loopback plays a payments API");
    let nginx = Nginx::start(&dir.join("nginx"), LOCATIONS)?;
    let base = format!("http://127.0.0.1:{}", nginx.port);
    println!(
        "   nginx {} on 127.0.0.1:{}: /v1/customers (JSON with e-mails and cards), /v1/whoami \
         (echoes the Authorization it got), /admin/",
        nginx.version(),
        nginx.port
    );

    let cgroup = mount.join(super::DEMO_CGROUP).join(CGROUP);
    std::fs::create_dir_all(&cgroup)?;
    let token = dir.join("payments.token");
    std::fs::write(&token, format!("{TOKEN}\n"))?;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))?;
    let sections = format!(
        r#"
[[target]]
name = "payments-api"
protocol = "http"
address = "127.0.0.1:{port}"

[[account]]
name = "{ACCOUNT}"
cgroups = ["/{demo}/{CGROUP}"]

[[grant]]
account = "{ACCOUNT}"
target = "payments-api"
policy = "payments"
masking = "payments-pii"
credential = {{ kind = "bearer", file = "{token}" }}

[policy.payments]
path_case = "insensitive"
rules = [
  {{ action = "allow", methods = ["GET"], paths = ["/v1/**"] }},
  {{ action = "block", paths = ["/admin/**"], name = "no-admin" }},
]

[masking.payments-pii]
patterns = ["card", "email"]
fields = [{{ pointer = "/customers/*/card", strategy = "last4" }}]
unmasked_types = ["text/plain"]
"#,
        port = nginx.port,
        demo = super::DEMO_CGROUP,
        token = token.display(),
    );
    let config = dir.join("warden.toml");
    let base_toml = std::fs::read_to_string(root.join("config/demo.toml"))?;
    std::fs::write(&config, format!("{base_toml}{sections}"))?;
    step(&format!(
        "Warden restarted with an http target; what the demo added to config/demo.toml ({}):",
        config.display()
    ));
    for line in sections.trim().lines() {
        println!("   | {line}");
    }
    guard.start(&config)?;

    let calls: [(&str, Vec<String>); 3] = [
        (
            "the workload sends its own token; the API gets Warden's credential instead and \
             echoes it: Warden never lets its own secret back to the workload (502)",
            vec![
                "-H".into(),
                "Authorization: Bearer the-workloads-own-token".into(),
                format!("{base}/v1/whoami"),
            ],
        ),
        (
            "customer records: e-mails redacted, cards cut to their last four digits",
            vec![format!("{base}/v1/customers")],
        ),
        (
            "a percent-encoded /admin (\"/%61dmin/users\") is the same path to the policy: 403",
            vec!["--path-as-is".into(), format!("{base}/%61dmin/users")],
        ),
    ];
    for (what, args) in calls {
        step(&format!(
            "workload (cgroup /{}/{CGROUP}): {what}",
            super::DEMO_CGROUP
        ));
        let mut full: Vec<&str> = vec!["-sS", "-w", "\n(HTTP %{http_code})\n"];
        full.extend(args.iter().map(String::as_str));
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("'{a}'")
                } else {
                    a.clone()
                }
            })
            .collect();
        println!("   workload$ curl {}", shown.join(" "));
        let out = crate::pg::in_cgroup(&cgroup, Path::new("/usr/bin/curl"), &full)
            .output()
            .context("running curl")?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            println!("           | {line}");
        }
    }

    std::thread::sleep(std::time::Duration::from_millis(500));
    step(&format!("warden audit tail --account {ACCOUNT}"));
    let tail = Command::new(&guard.warden)
        .arg("-c")
        .arg(&config)
        .args(["audit", "tail", "--account", ACCOUNT, "-n", "20"])
        .output()?;
    print!("{}", String::from_utf8_lossy(&tail.stdout));
    let all = String::from_utf8_lossy(&tail.stdout).into_owned();
    if all.contains(TOKEN) || all.contains("the-workloads-own-token") {
        anyhow::bail!("a credential reached the audit trail");
    }
    println!("   (no credential, neither Warden's nor the workload's, is in the trail)");

    step("warden audit verify");
    guard.warden(&config, &["audit", "verify"])?;
    step("warden uninstall; nginx is stopped");
    guard.uninstall(&config)?;
    drop(nginx);
    Ok(())
}
