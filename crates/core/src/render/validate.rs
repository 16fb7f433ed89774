//! `render`'s admission check: every rule the controller's webhook applies
//! (`api::validation`), run on every ExternalIPPool and Egress of the file, each checked against
//! the file's pools as the webhook checks against the stored ones. A cluster would have refused
//! these objects, so `render` refuses them too unless told to render them anyway. Pure: it
//! never reads the file itself.

use crate::api::validation::{ValidationError, validate_egress, validate_pool};

use super::Parsed;

/// The most `render` reads of its input: far above any real cluster file, far below what would
/// keep the YAML parser busy for long.
pub const MAX_INPUT_BYTES: u64 = 8 << 20;

/// Every webhook rule the objects of `parsed` break, pools first, in file order. Each error
/// names the object and the field (`ExternalIPPool p: spec.ipRanges[0]: ...`).
pub fn admission_errors(parsed: &Parsed) -> Vec<ValidationError> {
    let pools = &parsed.view.pools;
    let mut errors = Vec::new();
    for pool in pools {
        errors.extend(validate_pool(pool, None, pools).err().unwrap_or_default());
    }
    for egress in &parsed.egress_objects {
        errors.extend(
            validate_egress(egress, None, pools)
                .err()
                .unwrap_or_default(),
        );
    }
    errors
}
