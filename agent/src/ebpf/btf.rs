//! Just enough of the kernel's BTF (`/sys/kernel/btf/vmlinux`) to find the
//! byte offsets of struct fields the LSM programs read, so no kernel struct
//! layout is compiled into them.

use std::collections::HashMap;

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("not BTF (bad magic or header)")]
    Header,
    #[error("BTF type section is truncated")]
    Truncated,
    #[error("unknown BTF kind {0}")]
    Kind(u32),
}

#[derive(Debug, Clone, Copy)]
struct Member {
    name_off: u32,
    ty: u32,
    /// Bit offset; with the struct's kflag, the low 24 bits.
    bit_offset: u32,
}

#[derive(Debug, Default)]
struct Ty {
    name_off: u32,
    kind: u32,
    kflag: bool,
    /// Referenced type id (typedef, const, ...).
    ty: u32,
    members: Vec<Member>,
}

/// Parsed BTF: types (id 0 is void) and the string section.
pub struct Btf {
    types: Vec<Ty>,
    strings: Vec<u8>,
    structs: HashMap<String, u32>,
}

impl Btf {
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let u16_at = |o: usize| -> Option<u16> {
            Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?))
        };
        let u32_at = |o: usize| -> Option<u32> {
            Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?))
        };
        if u16_at(0) != Some(MAGIC) {
            return Err(BtfError::Header);
        }
        let hdr_len = u32_at(4).ok_or(BtfError::Header)? as usize;
        let type_off = u32_at(8).ok_or(BtfError::Header)? as usize;
        let type_len = u32_at(12).ok_or(BtfError::Header)? as usize;
        let str_off = u32_at(16).ok_or(BtfError::Header)? as usize;
        let str_len = u32_at(20).ok_or(BtfError::Header)? as usize;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Truncated)?
            .to_vec();
        let start = hdr_len + type_off;
        let end = start + type_len;
        if data.len() < end {
            return Err(BtfError::Truncated);
        }
        let mut types = vec![Ty::default()];
        let mut o = start;
        while o < end {
            let name_off = u32_at(o).ok_or(BtfError::Truncated)?;
            let info = u32_at(o + 4).ok_or(BtfError::Truncated)?;
            let size_or_type = u32_at(o + 8).ok_or(BtfError::Truncated)?;
            o += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let mut ty = Ty {
                name_off,
                kind,
                kflag: info >> 31 != 0,
                ty: size_or_type,
                members: Vec::new(),
            };
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = o + i * 12;
                        ty.members.push(Member {
                            name_off: u32_at(m).ok_or(BtfError::Truncated)?,
                            ty: u32_at(m + 4).ok_or(BtfError::Truncated)?,
                            bit_offset: u32_at(m + 8).ok_or(BtfError::Truncated)?,
                        });
                    }
                    vlen * 12
                }
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                2 | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | 12 | 16
                | KIND_TYPE_TAG => 0,
                k => return Err(BtfError::Kind(k)),
            };
            o += extra;
            types.push(ty);
        }
        let mut btf = Self {
            types,
            strings,
            structs: HashMap::new(),
        };
        let mut structs = HashMap::new();
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && !t.members.is_empty() {
                let name = btf.name(t.name_off);
                if !name.is_empty() {
                    structs.entry(name.to_owned()).or_insert(id as u32);
                }
            }
        }
        btf.structs = structs;
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let Some(rest) = self.strings.get(off as usize..) else {
            return "";
        };
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// `id` with typedefs and qualifiers peeled off.
    fn resolve(&self, mut id: u32) -> Option<&Ty> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.ty
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// Byte offset of member `name` in `t`, looking into anonymous structs
    /// and unions; with the member's type id.
    fn member(&self, t: &Ty, name: &str, depth: u32) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        for m in &t.members {
            let bits = if t.kflag {
                m.bit_offset & 0xff_ffff
            } else {
                m.bit_offset
            };
            if m.name_off != 0 {
                if self.name(m.name_off) == name {
                    if bits % 8 != 0 || (t.kflag && m.bit_offset >> 24 != 0) {
                        return None;
                    }
                    return Some((bits / 8, m.ty));
                }
                continue;
            }
            let inner = self.resolve(m.ty)?;
            if (inner.kind == KIND_STRUCT || inner.kind == KIND_UNION)
                && let Some((off, ty)) = self.member(inner, name, depth + 1)
            {
                return Some((bits / 8 + off, ty));
            }
        }
        None
    }

    /// Byte offset of `struct <name>`'s field `path` (`["f_path",
    /// "dentry"]` for `file.f_path.dentry`).
    pub fn offset(&self, name: &str, path: &[&str]) -> Option<u32> {
        let mut t = self.types.get(*self.structs.get(name)? as usize)?;
        let mut total = 0u32;
        for (i, field) in path.iter().enumerate() {
            let (off, ty) = self.member(t, field, 0)?;
            total = total.checked_add(off)?;
            if i + 1 < path.len() {
                t = self.resolve(ty)?;
                if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
                    return None;
                }
            }
        }
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_of_the_running_kernel() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            return;
        };
        let btf = Btf::parse(&data).unwrap();
        // `struct path` is { vfsmount *mnt; dentry *dentry; } everywhere.
        assert_eq!(btf.offset("path", &["dentry"]), Some(8));
        assert_eq!(btf.offset("list_head", &["prev"]), Some(8));
        assert!(btf.offset("file", &["f_path", "dentry"]).is_some());
        assert!(btf.offset("task_struct", &["tgid"]).is_some());
        assert_eq!(btf.offset("file", &["no_such_field"]), None);
        assert_eq!(btf.offset("no_such_struct", &["x"]), None);
    }

    #[test]
    fn rejects_what_is_not_btf() {
        assert!(Btf::parse(b"not btf at all, not at all").is_err());
        assert!(Btf::parse(&[]).is_err());
    }
}
