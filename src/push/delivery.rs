//! What the push providers (web push, FCM) share with the dispatcher: the outcome of one try
//! and the HTTP client that applies the endpoint policy before every connection.
use std::time::Duration;

use super::endpoint::{EndpointPolicy, Route, Unroutable};

/// The result of one try to one target.
pub enum Outcome {
    Delivered,
    /// The provider says the target no longer exists: delete it.
    Gone,
    /// The address resolved only to addresses the policy refuses: never contacted, kept.
    Blocked(String),
    /// Worth another try, after `after` when the provider said so (`Retry-After`).
    Retry {
        why: String,
        after: Option<Duration>,
    },
    /// Refused for good (another try would be refused too): given up at once.
    Failed(String),
}

impl Outcome {
    pub fn retry(why: impl Into<String>) -> Outcome {
        Outcome::Retry {
            why: why.into(),
            after: None,
        }
    }
}

/// The HTTP side shared by the providers: one client, and the endpoint policy applied to every
/// address before it is contacted.
pub struct Http {
    pub client: awc::Client,
    pub policy: EndpointPolicy,
}

impl Http {
    /// A POST to `url`, connecting only where the policy allows (its host resolved now).
    pub async fn post(&self, url: &str) -> Result<awc::ClientRequest, Outcome> {
        let route = match self.policy.resolve(url).await {
            Ok(route) => route,
            Err(Unroutable::Blocked(why)) => return Err(Outcome::Blocked(why)),
            Err(Unroutable::Unresolved(why)) => return Err(Outcome::retry(why)),
        };
        let request = self.client.post(url);
        Ok(match route {
            Route::Address(address) => request.address(address),
            Route::AsWritten => request,
        })
    }
}
