//! Userspace side of the BPF LSM programs (`agent-ebpf/src/lsm.rs`): the
//! kernel struct offsets they read (from BTF), the protected inodes (device
//! and inode of Warden's state dir, pin dir, config and the secret files it
//! names, recorded at start), and the settings slot. Attaching is
//! [`super::Datapath::attach`]'s; reading denials is [`super::denials`]'.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use warden_common::{InodeKey, KernelOffsets, TaskOffsets};

use super::btf::Btf;
use crate::config::Config;

/// Why the LSM programs are not attached (a warning, never fatal).
#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    #[error(
        "BPF LSM is not active on this kernel (`bpf` is not in /sys/kernel/security/lsm; boot with lsm=...,bpf)"
    )]
    Inactive,
    #[error("reading the kernel's BTF: {0}")]
    Btf(String),
    #[error("the kernel's BTF has no field {0}")]
    Field(&'static str),
}

/// The offsets of every field the programs read.
pub fn kernel_offsets(btf: &Btf) -> Result<KernelOffsets, LsmError> {
    let get = |s: &str, path: &[&str], what: &'static str| {
        btf.offset(s, path).ok_or(LsmError::Field(what))
    };
    Ok(KernelOffsets {
        file_f_inode: get("file", &["f_inode"], "file.f_inode")?,
        file_f_mode: get("file", &["f_mode"], "file.f_mode")?,
        file_f_dentry: get("file", &["f_path", "dentry"], "file.f_path.dentry")?,
        inode_i_ino: get("inode", &["i_ino"], "inode.i_ino")?,
        inode_i_sb: get("inode", &["i_sb"], "inode.i_sb")?,
        sb_s_dev: get("super_block", &["s_dev"], "super_block.s_dev")?,
        sb_s_magic: get("super_block", &["s_magic"], "super_block.s_magic")?,
        dentry_d_parent: get("dentry", &["d_parent"], "dentry.d_parent")?,
        dentry_d_inode: get("dentry", &["d_inode"], "dentry.d_inode")?,
        task_tgid: get("task_struct", &["tgid"], "task_struct.tgid")?,
        cred_uid: get("cred", &["uid"], "cred.uid")?,
    })
}

/// The offsets the exec, fork and exit programs read.
pub fn task_offsets(btf: &Btf) -> Result<TaskOffsets, LsmError> {
    let get = |s: &str, path: &[&str], what: &'static str| {
        btf.offset(s, path).ok_or(LsmError::Field(what))
    };
    Ok(TaskOffsets {
        bprm_file: get("linux_binprm", &["file"], "linux_binprm.file")?,
        task_pid: get("task_struct", &["pid"], "task_struct.pid")?,
        task_tgid: get("task_struct", &["tgid"], "task_struct.tgid")?,
        file_f_inode: get("file", &["f_inode"], "file.f_inode")?,
        inode_i_ino: get("inode", &["i_ino"], "inode.i_ino")?,
        inode_i_sb: get("inode", &["i_sb"], "inode.i_sb")?,
        sb_s_dev: get("super_block", &["s_dev"], "super_block.s_dev")?,
        task_cred: get("task_struct", &["cred"], "task_struct.cred")?,
        cred_user_ns: get("cred", &["user_ns"], "cred.user_ns")?,
        userns_level: get("user_namespace", &["level"], "user_namespace.level")?,
        userns_owner: get("user_namespace", &["owner"], "user_namespace.owner")?,
        userns_parent: get("user_namespace", &["parent"], "user_namespace.parent")?,
        ready: 1,
        seeded: 0,
        task_signal: get("task_struct", &["signal"], "task_struct.signal")?,
        signal_live: get("signal_struct", &["live", "counter"], "signal_struct.live")?,
    })
}

/// Reads and parses `/sys/kernel/btf/vmlinux`.
pub fn kernel_btf() -> Result<Btf, LsmError> {
    let data =
        std::fs::read("/sys/kernel/btf/vmlinux").map_err(|e| LsmError::Btf(e.to_string()))?;
    Btf::parse(&data).map_err(|e| LsmError::Btf(e.to_string()))
}

/// What enrolled workloads may not open, move or remove: the state dir and
/// pin dir (with everything below them), the configuration file, the audit
/// store, and every secret file the configuration names (upstream
/// passwords, TLS private keys, HTTP credentials, identity and forwarder
/// tokens). Public material (CA bundles, certificates, JWKS) stays readable.
pub fn protected_paths(config: &Config) -> Vec<PathBuf> {
    let mut v = vec![
        config.agent.state_dir.clone(),
        config.agent.bpf_pin_dir.clone(),
        config.source.clone(),
        config.audit_path(),
    ];
    for t in &config.targets {
        if let Some(tls) = &t.client_tls {
            v.push(tls.key_file.clone());
        }
    }
    v.extend(config.grants.iter().filter_map(|g| g.password_file.clone()));
    v.extend(config.credentials.values().map(|c| c.file.clone()));
    for a in &config.accounts {
        if let Some(id) = &a.identity {
            v.extend(id.token_file.clone());
        }
    }
    for f in &config.forwards {
        v.extend(f.token_file.clone());
        v.extend(f.credentials_file.clone());
        v.extend(f.client_key_file.clone());
    }
    v.sort();
    v.dedup();
    v
}

/// The map key of `path`'s inode (following symlinks): the device in the
/// kernel's encoding (`MKDEV`: major << 20 | minor, as `sb->s_dev` holds it)
/// and the inode number. `None` when it does not exist.
pub fn inode_key(path: &Path) -> Option<InodeKey> {
    let m = std::fs::metadata(path).ok()?;
    Some(InodeKey {
        ino: m.ino(),
        dev: kernel_dev(m.dev()),
        _pad: 0,
    })
}

/// `st_dev` (userspace encoding) as the kernel's `dev_t`.
pub fn kernel_dev(st_dev: u64) -> u32 {
    let major = nix::sys::stat::major(st_dev) as u32;
    let minor = nix::sys::stat::minor(st_dev) as u32;
    (major << 20) | (minor & 0xf_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dev_encoding() {
        // 8:1 (sda1) and 0:45 (an anonymous device).
        assert_eq!(kernel_dev(nix::sys::stat::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_dev(nix::sys::stat::makedev(0, 45)), 45);
        assert_eq!(
            kernel_dev(nix::sys::stat::makedev(259, 300)),
            (259 << 20) | 300
        );
    }

    #[test]
    fn offsets_are_found_in_the_running_kernel() {
        let Ok(btf) = kernel_btf() else {
            return;
        };
        let off = kernel_offsets(&btf).unwrap();
        assert_ne!(off.file_f_inode, off.file_f_dentry);
        assert!(off.task_tgid > 0);
    }
}
