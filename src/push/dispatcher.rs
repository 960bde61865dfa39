//! The push dispatcher actor: off the request path, it looks up a user's subscriptions, encrypts
//! and signs each notification, and sends it over HTTPS with a shared HTTP client and bounded
//! concurrency. A 404 or 410 deletes the subscription; an endpoint that the policy refuses at
//! delivery (its name resolves only to private addresses) is counted as blocked and kept; other
//! failures are retried (3 tries, 1 s then 3 s apart). Nothing here can delay or fail the action
//! that triggered the push.
//!
//! Fairness: all deliveries share [`CONCURRENCY`] slots, and one user holds at most
//! [`PER_USER_IN_FLIGHT`] of them, so a user whose endpoints hang (up to 10 s each) slows only
//! their own notifications, never another family's.
//!
//! A user's notifications leave in the order they were made: the next one starts once every
//! subscription has had its first try at the one before. Retries run on their own, so a failing
//! device can let a later notification overtake a retried one, but never holds the others back.
//!
//! Subscriptions are kept in memory per user (most users have none, and a grant or a chat message
//! to an absent member should not cost a query). Any change through this server forgets them all
//! at once; a change made by another server process is seen within [`SUBSCRIPTIONS_TTL`].
use std::cell::{Cell, RefCell};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use actix::prelude::*;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tokio::sync::Semaphore;
use web_push::{ContentEncoding, SubscriptionInfo, VapidSignature, WebPushMessageBuilder};

use super::endpoint::{EndpointPolicy, Route, Unroutable};
use super::{Notification, VapidKeys};
use crate::metrics::Metrics;
use crate::store::Db;
use crate::store::entities::push_subscription;

/// Deliveries in flight at once, all users together.
const CONCURRENCY: usize = 64;
/// Deliveries in flight at once for one user (of their at most 10 subscriptions).
pub const PER_USER_IN_FLIGHT: usize = 4;
const RETRY_DELAYS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];
/// TCP connect, and separately the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole request, from asking for a connection to the answer's status line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Notifications that may wait behind a user's current one; beyond it the oldest is dropped
/// (a device that cannot keep up gets the newest news).
const MAX_WAITING: usize = 32;
/// How long a user's subscriptions are used from memory before they are read again.
const SUBSCRIPTIONS_TTL: Duration = Duration::from_secs(60);
/// How long a push service keeps an undelivered notification (seconds).
const TTL: u32 = 24 * 60 * 60;
/// VAPID tokens expire this long after signing (RFC 8292: at most 24 h; API.md: at most 12 h).
const VAPID_LIFETIME_SECS: i64 = 12 * 60 * 60 - 60;
/// A signed VAPID token is used for this long, so it has 11 h left at its last use.
const VAPID_REUSE: Duration = Duration::from_secs(60 * 60);
/// Origins whose tokens are kept (users choose endpoints, so their origins are theirs to grow).
const VAPID_TOKENS_MAX: usize = 1024;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Notify {
    pub user_id: i64,
    pub notification: Notification,
}

/// A subscription was stored, taken over or removed: read subscriptions from the database again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscriptionsChanged;

pub struct PushDispatcher {
    shared: Rc<Shared>,
    /// Users with a notification on its way, and the ones waiting behind it, oldest first.
    waiting: HashMap<i64, VecDeque<Queued>>,
}

/// A notification and when it was made, for the delivery-latency histogram.
struct Queued {
    notification: Notification,
    made_at: Instant,
}

/// What every try of one notification to one subscription shares.
struct Delivery {
    user_id: i64,
    subscription: push_subscription::Model,
    notification: Rc<Notification>,
    payload: Rc<Vec<u8>>,
    made_at: Instant,
}

/// What the dispatcher needs besides the database and the keys.
pub struct PushSettings {
    /// VAPID `sub` claim.
    pub subject: String,
    pub policy: EndpointPolicy,
    pub tls: Arc<rustls::ClientConfig>,
}

struct Shared {
    db: Db,
    keys: VapidKeys,
    subject: String,
    policy: EndpointPolicy,
    metrics: Arc<Metrics>,
    client: awc::Client,
    permits: Semaphore,
    /// Each user's share of `permits`; swept when unused.
    per_user: RefCell<HashMap<i64, Rc<Semaphore>>>,
    /// origin → its VAPID token and when it was signed.
    vapid_tokens: RefCell<HashMap<String, (VapidSignature, Instant)>>,
    subscriptions: RefCell<HashMap<i64, Cached>>,
    /// Bumped whenever the cache is cleared, so that a read begun before a change is not kept.
    generation: Cell<u64>,
}

struct Cached {
    list: Rc<[push_subscription::Model]>,
    read_at: Instant,
}

impl Shared {
    async fn subscriptions_of(
        &self,
        user_id: i64,
    ) -> Result<Rc<[push_subscription::Model]>, sea_orm::DbErr> {
        if let Some(cached) = self.subscriptions.borrow().get(&user_id)
            && cached.read_at.elapsed() < SUBSCRIPTIONS_TTL
        {
            return Ok(cached.list.clone());
        }
        let generation = self.generation.get();
        let read_at = Instant::now();
        let list: Rc<[push_subscription::Model]> = push_subscription::Entity::find()
            .filter(push_subscription::Column::UserId.eq(user_id))
            .all(&self.db.read)
            .await?
            .into();
        if self.generation.get() == generation {
            let cached = Cached {
                list: list.clone(),
                read_at,
            };
            self.subscriptions.borrow_mut().insert(user_id, cached);
        }
        Ok(list)
    }

    /// The VAPID token for a push service's origin: signed once and reused for [`VAPID_REUSE`]
    /// (an ES256 signature per push is most of a delivery's CPU otherwise).
    fn vapid_token(
        &self,
        info: &SubscriptionInfo,
        aud: String,
    ) -> Result<VapidSignature, web_push::WebPushError> {
        if let Some((token, signed_at)) = self.vapid_tokens.borrow().get(&aud)
            && signed_at.elapsed() < VAPID_REUSE
        {
            return Ok(token.clone());
        }
        let mut signer = self.keys.signer()?.add_sub_info(info);
        signer.add_claim("aud", aud.as_str());
        signer.add_claim("sub", self.subject.as_str());
        signer.add_claim(
            "exp",
            (chrono::Utc::now().timestamp() + VAPID_LIFETIME_SECS) as u64,
        );
        let token = signer.build()?;
        let mut tokens = self.vapid_tokens.borrow_mut();
        if tokens.len() >= VAPID_TOKENS_MAX {
            tokens.retain(|_, (_, signed_at)| signed_at.elapsed() < VAPID_REUSE);
            if tokens.len() >= VAPID_TOKENS_MAX {
                tokens.clear();
            }
        }
        tokens.insert(aud, (token.clone(), Instant::now()));
        Ok(token)
    }

    fn forget_subscriptions(&self) {
        self.generation.set(self.generation.get() + 1);
        self.subscriptions.borrow_mut().clear();
    }
}

impl PushDispatcher {
    pub fn new(db: Db, keys: VapidKeys, settings: PushSettings, metrics: Arc<Metrics>) -> Self {
        let connector = awc::Connector::new()
            .rustls_0_23(settings.tls)
            .timeout(CONNECT_TIMEOUT)
            .handshake_timeout(CONNECT_TIMEOUT)
            // More connections than deliveries in flight, so that idle kept-alive ones to other
            // push services never make a delivery wait.
            .limit(2 * CONCURRENCY);
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(REQUEST_TIMEOUT)
            .disable_redirects()
            .finish();
        PushDispatcher {
            shared: Rc::new(Shared {
                db,
                keys,
                subject: settings.subject,
                policy: settings.policy,
                metrics,
                client,
                permits: Semaphore::new(CONCURRENCY),
                per_user: RefCell::default(),
                vapid_tokens: RefCell::default(),
                subscriptions: RefCell::default(),
                generation: Cell::new(0),
            }),
            waiting: HashMap::new(),
        }
    }

    /// Sends `notification` to every subscription of `user_id`, then the user's next waiting one.
    fn send(&mut self, user_id: i64, notification: Queued, ctx: &mut Context<Self>) {
        ctx.spawn(
            first_tries(self.shared.clone(), user_id, notification)
                .into_actor(self)
                .map(move |(), act, ctx| {
                    match act.waiting.get_mut(&user_id).and_then(VecDeque::pop_front) {
                        Some(next) => act.send(user_id, next, ctx),
                        None => {
                            act.waiting.remove(&user_id);
                        }
                    }
                }),
        );
    }
}

impl Actor for PushDispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(SUBSCRIPTIONS_TTL, |act, _| {
            act.shared
                .subscriptions
                .borrow_mut()
                .retain(|_, cached| cached.read_at.elapsed() < SUBSCRIPTIONS_TTL);
            // Held by nobody but the map: nothing of that user's is in flight or waiting.
            act.shared
                .per_user
                .borrow_mut()
                .retain(|_, slots| Rc::strong_count(slots) > 1);
        });
    }
}

impl Handler<SubscriptionsChanged> for PushDispatcher {
    type Result = ();

    fn handle(&mut self, _: SubscriptionsChanged, _: &mut Context<Self>) {
        self.shared.forget_subscriptions();
    }
}

impl Handler<Notify> for PushDispatcher {
    type Result = ();

    fn handle(&mut self, msg: Notify, ctx: &mut Context<Self>) {
        let queued = Queued {
            notification: msg.notification,
            made_at: Instant::now(),
        };
        match self.waiting.entry(msg.user_id) {
            Entry::Occupied(mut queue) => {
                let queue = queue.get_mut();
                if queue.len() == MAX_WAITING {
                    queue.pop_front();
                    self.shared.metrics.pushes_failed.fetch_add(1, Relaxed);
                    log::warn!(
                        "push: user {} is behind, dropped a notification",
                        msg.user_id
                    );
                }
                queue.push_back(queued);
            }
            Entry::Vacant(slot) => {
                slot.insert(VecDeque::new());
                self.send(msg.user_id, queued, ctx);
            }
        }
    }
}

/// Gives each of the user's subscriptions its first try at `notification`; what must be retried
/// is left to a task of its own.
async fn first_tries(shared: Rc<Shared>, user_id: i64, queued: Queued) {
    let subscriptions = match shared.subscriptions_of(user_id).await {
        Ok(subscriptions) => subscriptions,
        Err(err) => return log::error!("push: subscriptions of user {user_id} unreadable: {err}"),
    };
    let notification = Rc::new(queued.notification);
    let payload = Rc::new(notification.payload());
    shared.metrics.push_notifications.fetch_add(1, Relaxed);
    let tries = subscriptions.iter().map(|subscription| {
        let shared = shared.clone();
        let delivery = Delivery {
            user_id,
            subscription: subscription.clone(),
            notification: notification.clone(),
            payload: payload.clone(),
            made_at: queued.made_at,
        };
        async move {
            if let Some(why) = attempt(&shared, &delivery, 0).await {
                actix_web::rt::spawn(retry(shared, delivery, why));
            }
        }
    });
    futures_util::future::join_all(tries).await;
}

enum Outcome {
    Delivered,
    Gone,
    Blocked(String),
    Retry(String),
}

/// One try; `Some(reason)` when it should be tried again.
async fn attempt(shared: &Shared, delivery: &Delivery, tried_before: usize) -> Option<String> {
    let user_slots = shared
        .per_user
        .borrow_mut()
        .entry(delivery.user_id)
        .or_insert_with(|| Rc::new(Semaphore::new(PER_USER_IN_FLIGHT)))
        .clone();
    let outcome = match user_slots.acquire().await {
        Ok(_user_permit) => match shared.permits.acquire().await {
            Ok(_permit) => send_once(shared, delivery).await,
            Err(_) => return None,
        },
        Err(_) => return None,
    };
    let subscription = &delivery.subscription;
    match outcome {
        Outcome::Delivered => {
            shared.metrics.pushes_sent.fetch_add(1, Relaxed);
            shared
                .metrics
                .push_delivery
                .observe(delivery.made_at.elapsed());
            None
        }
        Outcome::Gone => {
            log::info!(
                "push: subscription {} is gone, deleting it",
                subscription.id
            );
            shared.forget_subscriptions();
            if let Err(err) = push_subscription::Entity::delete_many()
                .filter(push_subscription::Column::Endpoint.eq(subscription.endpoint.clone()))
                .exec(&shared.db.write)
                .await
            {
                log::error!(
                    "push: could not delete subscription {}: {err}",
                    subscription.id
                );
            }
            None
        }
        Outcome::Blocked(why) => {
            log::warn!(
                "push: not contacting subscription {} of user {}: {why}",
                subscription.id,
                delivery.user_id
            );
            shared.metrics.pushes_blocked.fetch_add(1, Relaxed);
            None
        }
        Outcome::Retry(why) => {
            log::warn!(
                "push: try {} to subscription {} failed: {why}",
                tried_before + 1,
                subscription.id
            );
            Some(why)
        }
    }
}

/// The tries after the first, `RETRY_DELAYS` apart.
async fn retry(shared: Rc<Shared>, delivery: Delivery, mut why: String) {
    for (tried, delay) in RETRY_DELAYS.into_iter().enumerate() {
        tokio::time::sleep(delay).await;
        match attempt(&shared, &delivery, tried + 1).await {
            Some(again) => why = again,
            None => return,
        }
    }
    log::warn!(
        "push: gave up on subscription {}: {why}",
        delivery.subscription.id
    );
    shared.metrics.pushes_failed.fetch_add(1, Relaxed);
}

async fn send_once(shared: &Shared, delivery: &Delivery) -> Outcome {
    let route = match shared.policy.resolve(&delivery.subscription.endpoint).await {
        Ok(route) => route,
        Err(Unroutable::Blocked(why)) => return Outcome::Blocked(why),
        Err(Unroutable::Unresolved(why)) => return Outcome::Retry(why),
    };
    let request = match build_request(shared, delivery) {
        Ok(request) => request,
        Err(err) => return Outcome::Retry(format!("could not build the request: {err}")),
    };
    let mut client_request = shared.client.post(request.endpoint);
    if let Route::Address(address) = route {
        client_request = client_request.address(address);
    }
    for (name, value) in request.headers {
        client_request = client_request.insert_header((name, value));
    }
    match client_request.send_body(request.body).await {
        Ok(response) if response.status().is_success() => Outcome::Delivered,
        Ok(response) if matches!(response.status().as_u16(), 404 | 410) => Outcome::Gone,
        Ok(response) => Outcome::Retry(format!("push service answered {}", response.status())),
        Err(err) => Outcome::Retry(err.to_string()),
    }
}

struct PushRequest {
    endpoint: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// An encrypted, signed request for one subscription. `aud` is the endpoint's exact origin,
/// port included (web-push's default drops a non-default port, which push services reject).
fn build_request(
    shared: &Shared,
    delivery: &Delivery,
) -> Result<PushRequest, web_push::WebPushError> {
    let subscription = &delivery.subscription;
    let info = SubscriptionInfo::new(
        subscription.endpoint.as_str(),
        subscription.p256dh.as_str(),
        subscription.auth.as_str(),
    );
    let aud = origin(&subscription.endpoint).ok_or(web_push::WebPushError::InvalidUri)?;
    let signature = shared.vapid_token(&info, aud)?;
    let mut message = WebPushMessageBuilder::new(&info);
    message.set_payload(ContentEncoding::Aes128Gcm, &delivery.payload);
    message.set_ttl(TTL);
    message.set_urgency(delivery.notification.urgency());
    if let Some(topic) = delivery.notification.topic() {
        message.set_topic(topic.to_owned());
    }
    message.set_vapid_signature(signature);
    let request = web_push::request_builder::build_request::<Vec<u8>>(message.build()?);
    Ok(PushRequest {
        endpoint: subscription.endpoint.clone(),
        headers: request
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect(),
        body: request.into_body(),
    })
}

/// `scheme://host[:port]` of a URL, keeping a non-default port.
pub fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    if authority.is_empty() {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let authority = authority.to_ascii_lowercase();
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Some(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn origin_keeps_a_non_default_port() {
        assert_eq!(
            origin("http://127.0.0.1:8123/push/1").as_deref(),
            Some("http://127.0.0.1:8123")
        );
        assert_eq!(
            origin("https://fcm.googleapis.com/fcm/send/x").as_deref(),
            Some("https://fcm.googleapis.com")
        );
        assert_eq!(
            origin("https://push.example:443/x").as_deref(),
            Some("https://push.example")
        );
        assert_eq!(
            origin("HTTPS://Push.Example:8443").as_deref(),
            Some("https://push.example:8443")
        );
        assert_eq!(origin("ftp://x/y"), None);
    }
}
