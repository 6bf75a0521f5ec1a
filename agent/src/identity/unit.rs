//! systemd units → cgroup2 paths, following systemd's slice layout, without
//! talking to systemd: a unit's cgroup is a directory named after the unit,
//! directly inside its slice, and slices nest by name (`a-b.slice` lives in
//! `a.slice`). Only `*.slice` directories are searched, so units of user
//! managers (below `user@N.service`) are never matched.

use std::fs;
use std::path::Path;

/// How deep slices are searched (systemd's own slices are 1–4 deep).
const MAX_SLICE_DEPTH: usize = 8;

/// The cgroup2 path (relative to the mount) of `unit`, if it exists now.
/// `/system.slice/<unit>` is tried first; then every slice, breadth first, in
/// name order, so the result is deterministic.
pub fn resolve(mount: &Path, unit: &str) -> Option<String> {
    if mount.join("system.slice").join(unit).is_dir() {
        return Some(format!("/system.slice/{unit}"));
    }
    let mut level: Vec<String> = vec![String::new()];
    for _ in 0..MAX_SLICE_DEPTH {
        let mut next = Vec::new();
        for rel in &level {
            let dir = if rel.is_empty() {
                mount.to_path_buf()
            } else {
                mount.join(rel.trim_start_matches('/'))
            };
            if !rel.is_empty() && dir.join(unit).is_dir() {
                return Some(format!("{rel}/{unit}"));
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            let mut slices: Vec<String> = entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.ends_with(".slice"))
                .collect();
            slices.sort();
            next.extend(slices.into_iter().map(|n| format!("{rel}/{n}")));
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_units_in_system_and_nested_slices_only() {
        let m = tempfile::tempdir().unwrap();
        let mk = |p: &str| fs::create_dir_all(m.path().join(p)).unwrap();
        mk("system.slice/orders-api.service");
        mk("app.slice/app-billing.slice/billing.service");
        mk("user.slice/user-1000.slice/user@1000.service/app.slice/sneaky.service");
        mk("not-a-slice/hidden.service");
        assert_eq!(
            resolve(m.path(), "orders-api.service").as_deref(),
            Some("/system.slice/orders-api.service")
        );
        assert_eq!(
            resolve(m.path(), "billing.service").as_deref(),
            Some("/app.slice/app-billing.slice/billing.service")
        );
        // Units of a user manager and directories outside slices are not units
        // of the system manager.
        assert_eq!(resolve(m.path(), "sneaky.service"), None);
        assert_eq!(resolve(m.path(), "hidden.service"), None);
        assert_eq!(resolve(m.path(), "missing.service"), None);
    }
}
