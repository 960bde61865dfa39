//! The server's VAPID key pair: P-256, generated on first start and kept in `settings`.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use web_push::{PartialVapidSignatureBuilder, VapidSignatureBuilder};

use crate::store::Db;

const SETTING: &str = "vapid_private_key";

/// Deliberately not `Debug`: the private key never reaches a log.
#[derive(Clone)]
pub struct VapidKeys {
    /// The raw 32-byte private scalar, base64url without padding.
    private_b64: String,
    /// The uncompressed 65-byte public point, base64url without padding (what browsers take as
    /// `applicationServerKey`).
    pub public_b64: String,
}

impl VapidKeys {
    pub async fn load_or_create(db: &Db) -> Result<VapidKeys, sea_orm::DbErr> {
        let private_b64 = db.setting_or_insert(SETTING, generate_private_key).await?;
        let signer = VapidSignatureBuilder::from_base64_no_sub(&private_b64).map_err(|err| {
            sea_orm::DbErr::Custom(format!("stored VAPID key is unusable: {err}"))
        })?;
        Ok(VapidKeys {
            public_b64: URL_SAFE_NO_PAD.encode(signer.get_public_key()),
            private_b64,
        })
    }

    pub fn signer(&self) -> Result<PartialVapidSignatureBuilder, web_push::WebPushError> {
        VapidSignatureBuilder::from_base64_no_sub(&self.private_b64)
    }
}

/// 32 random bytes are a valid P-256 private key unless they exceed the group order (odds about
/// 2^-32); such a draw is rejected by the signer and drawn again.
fn generate_private_key() -> String {
    loop {
        let candidate = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        if VapidSignatureBuilder::from_base64_no_sub(&candidate).is_ok() {
            return candidate;
        }
    }
}
