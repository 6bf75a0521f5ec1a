//! `[masking.NAME]` tables: each compiled once, at load (the column and
//! pattern rules of its [`Masker`], the JSON [`FieldRules`] of HTTP
//! bodies); every problem is reported at its key. The HMAC key named by
//! `hmac_key_file` is read when a runtime is built (a secret is not held in
//! the parsed configuration): [`Masker::keyed`] gives the compiled masker
//! its key without compiling it again.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::error::{Diags, join};
use super::load::Decoded;
use super::policy::sub_key;
use crate::masking::Masker;
use crate::masking::json::FieldRules;

/// One `[masking.NAME]` compiled.
#[derive(Debug, Clone)]
pub struct CompiledMasking {
    /// Without its HMAC key (strategy `hmac` redacts until
    /// [`Masker::keyed`] gives it one).
    pub unkeyed: Arc<Masker>,
    /// Rules for JSON members of HTTP bodies.
    pub fields: Arc<FieldRules>,
}

/// Compiles each `[masking.NAME]`, reporting every problem at its key.
pub(super) fn check(d: &Decoded, diags: &mut Diags<'_>) -> BTreeMap<String, CompiledMasking> {
    let mut out = BTreeMap::new();
    for (name, cfg) in &d.maskings {
        let Some(cfg) = cfg else { continue };
        let at = join("masking", name);
        if let Some(f) = &cfg.hmac_key_file {
            super::validate::check_absolute(&join(&at, "hmac_key_file"), f, diags);
        }
        let masker = Masker::compile_unkeyed(cfg).map_err(|problems| {
            for p in problems {
                diags.at(&sub_key(&at, &p.key), p.message);
            }
        });
        let fields = FieldRules::compile(cfg).map_err(|problems| {
            for p in problems {
                diags.at(&sub_key(&at, &p.key), p.message);
            }
        });
        if let (Ok(masker), Ok(fields)) = (masker, fields) {
            out.insert(
                name.clone(),
                CompiledMasking {
                    unkeyed: Arc::new(masker),
                    fields: Arc::new(fields),
                },
            );
        }
    }
    out
}
