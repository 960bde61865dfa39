//! Access tokens: JWT HS256, `sub` = user id, `jti` = a random id (what a logout revokes), valid
//! 7 days.
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub const TOKEN_LIFETIME_DAYS: i64 = 7;
/// Our ids are 22 characters; anything much longer is not one of ours (it would only bloat the
/// revocation table).
const MAX_JTI_LEN: usize = 64;

#[derive(Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    /// 128 random bits, base64url. Tokens issued before revocation existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// What a verified token says.
#[derive(Clone, Debug)]
pub struct TokenInfo {
    pub user_id: i64,
    /// The id a logout revokes: the `jti`, or for a token issued before `jti` existed
    /// `legacy-<sub>-<iat>` (tokens of one user issued in the same second share it, so revoking
    /// one revokes both, which errs on the safe side).
    pub id: String,
    /// Unix seconds.
    pub exp: i64,
}

/// Signing and verifying keys; deliberately not `Debug` so the secret never reaches a log.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn issue(
        &self,
        user_id: i64,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>), jsonwebtoken::errors::Error> {
        let expires_at = now + Duration::days(TOKEN_LIFETIME_DAYS);
        let claims = Claims {
            sub: user_id.to_string(),
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            jti: Some(
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()),
            ),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, expires_at))
    }

    /// A valid, unexpired token signed with our key (revocation is checked by the caller).
    pub fn verify(&self, token: &str) -> Option<TokenInfo> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()?
            .claims;
        let user_id = claims.sub.parse().ok()?;
        let id = match claims.jti {
            Some(jti) if !jti.is_empty() && jti.len() <= MAX_JTI_LEN => jti,
            Some(_) => return None,
            None => format!("legacy-{user_id}-{}", claims.iat),
        };
        Some(TokenInfo {
            user_id,
            id,
            exp: claims.exp,
        })
    }
}
