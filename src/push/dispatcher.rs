//! The push dispatcher actor: off the request path, it looks up a user's targets — the web push
//! subscriptions of their browsers and the FCM devices of their phones — and gives each one the
//! notification through its provider (`web.rs`, `fcm.rs`), with a shared HTTP client and bounded
//! concurrency. A target the provider calls gone (web push 404 or 410, FCM `UNREGISTERED` and
//! the like) is deleted; an address that the policy refuses at delivery (its name resolves only
//! to private addresses) is counted as blocked and kept; other failures are retried (3 tries,
//! 1 s then 3 s apart, or after the provider's `Retry-After`). Nothing here can delay or fail the
//! action that triggered the push.
//!
//! Fairness: all deliveries share [`CONCURRENCY`] slots, and one user holds at most
//! [`PER_USER_IN_FLIGHT`] of them, whatever the provider, so a user whose endpoints hang (up to
//! 10 s each) slows only their own notifications, never another family's.
//!
//! A user's notifications leave in the order they were made: the next one starts once every
//! target has had its first try at the one before. Retries run on their own, so a failing
//! device can let a later notification overtake a retried one, but never holds the others back.
//!
//! Targets are kept in memory per user (most users have none, and a grant or a chat message to
//! an absent member should not cost a query). Any change through this server forgets them all
//! at once, and so does one on another node in cluster mode (announced over Redis, see
//! `Push::targets_changed`); a change made by another server process that is not in the cluster
//! (or whose notice was lost) is seen within [`TARGETS_TTL`].
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

use super::delivery::{Http, Outcome};
use super::endpoint::EndpointPolicy;
use super::fcm::Fcm;
use super::web::WebPush;
use super::{Notification, VapidKeys};
use crate::metrics::{Metrics, ProviderMetrics};
use crate::store::Db;
use crate::store::entities::{push_device, push_subscription};

/// Deliveries in flight at once, all users together.
const CONCURRENCY: usize = 64;
/// Deliveries in flight at once for one user (of their at most 10 subscriptions and 10 devices).
pub const PER_USER_IN_FLIGHT: usize = 4;
const RETRY_DELAYS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];
/// TCP connect, and separately the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole request, from asking for a connection to the answer's status line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Notifications that may wait behind a user's current one; beyond it the oldest is dropped
/// (a device that cannot keep up gets the newest news).
const MAX_WAITING: usize = 32;
/// How long a user's targets are used from memory before they are read again.
const TARGETS_TTL: Duration = Duration::from_secs(60);

#[derive(Message)]
#[rtype(result = "()")]
pub struct Notify {
    pub user_id: i64,
    pub notification: Notification,
}

/// A subscription or a device was stored, taken over or removed: read targets again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TargetsChanged;

/// Where a user's notifications go.
#[derive(Clone)]
pub enum Target {
    /// A browser, by web push.
    Web(push_subscription::Model),
    /// The mobile app on a phone, by FCM.
    Fcm(push_device::Model),
}

impl std::fmt::Display for Target {
    /// For logs: never the endpoint's secret path or the device's whole token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Web(subscription) => write!(f, "subscription {}", subscription.id),
            Target::Fcm(device) => {
                write!(f, "FCM device {} (…{})", device.id, device.token_tail())
            }
        }
    }
}

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

/// What every try of one notification to one target shares.
struct Delivery {
    user_id: i64,
    target: Target,
    notification: Rc<Notification>,
    /// What the provider sends: the web push JSON before encryption (one for all of the user's
    /// browsers), or the FCM request body (one per device: the token is in it).
    payload: Rc<Vec<u8>>,
    made_at: Instant,
}

/// What the dispatcher needs besides the database and the keys.
pub struct PushSettings {
    /// VAPID `sub` claim.
    pub subject: String,
    pub policy: EndpointPolicy,
    pub tls: Arc<rustls::ClientConfig>,
    /// FCM, when the server has credentials.
    pub fcm: Option<Fcm>,
}

struct Shared {
    db: Db,
    metrics: Arc<Metrics>,
    http: Http,
    web: WebPush,
    fcm: Option<Fcm>,
    permits: Semaphore,
    /// Each user's share of `permits`; swept when unused.
    per_user: RefCell<HashMap<i64, Rc<Semaphore>>>,
    targets: RefCell<HashMap<i64, Cached>>,
    /// Bumped whenever the cache is cleared, so that a read begun before a change is not kept.
    generation: Cell<u64>,
}

struct Cached {
    list: Rc<[Target]>,
    read_at: Instant,
}

impl Shared {
    /// The user's web subscriptions, and their FCM devices when FCM is on.
    async fn targets_of(&self, user_id: i64) -> Result<Rc<[Target]>, sea_orm::DbErr> {
        if let Some(cached) = self.targets.borrow().get(&user_id)
            && cached.read_at.elapsed() < TARGETS_TTL
        {
            return Ok(cached.list.clone());
        }
        let generation = self.generation.get();
        let read_at = Instant::now();
        let mut list: Vec<Target> = push_subscription::Entity::find()
            .filter(push_subscription::Column::UserId.eq(user_id))
            .all(&self.db.read)
            .await?
            .into_iter()
            .map(Target::Web)
            .collect();
        if self.fcm.is_some() {
            let devices = push_device::Entity::find()
                .filter(push_device::Column::UserId.eq(user_id))
                .all(&self.db.read)
                .await?;
            list.extend(devices.into_iter().map(Target::Fcm));
        }
        let list: Rc<[Target]> = list.into();
        if self.generation.get() == generation {
            let cached = Cached {
                list: list.clone(),
                read_at,
            };
            self.targets.borrow_mut().insert(user_id, cached);
        }
        Ok(list)
    }

    fn forget_targets(&self) {
        self.generation.set(self.generation.get() + 1);
        self.targets.borrow_mut().clear();
    }

    fn counters(&self, target: &Target) -> &ProviderMetrics {
        match target {
            Target::Web(_) => &self.metrics.web_push,
            Target::Fcm(_) => &self.metrics.fcm,
        }
    }

    /// Deletes a target its provider called gone (by its endpoint or token, whoever has it now).
    async fn delete(&self, target: &Target) -> Result<(), sea_orm::DbErr> {
        match target {
            Target::Web(subscription) => {
                push_subscription::Entity::delete_many()
                    .filter(push_subscription::Column::Endpoint.eq(subscription.endpoint.clone()))
                    .exec(&self.db.write)
                    .await?;
            }
            Target::Fcm(device) => {
                push_device::Entity::delete_many()
                    .filter(push_device::Column::TokenKey.eq(device.token_key.clone()))
                    .exec(&self.db.write)
                    .await?;
            }
        }
        Ok(())
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
                metrics,
                http: Http {
                    client,
                    policy: settings.policy,
                },
                web: WebPush::new(keys, settings.subject),
                fcm: settings.fcm,
                permits: Semaphore::new(CONCURRENCY),
                per_user: RefCell::default(),
                targets: RefCell::default(),
                generation: Cell::new(0),
            }),
            waiting: HashMap::new(),
        }
    }

    /// Sends `notification` to every target of `user_id`, then the user's next waiting one.
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
        ctx.run_interval(TARGETS_TTL, |act, _| {
            act.shared
                .targets
                .borrow_mut()
                .retain(|_, cached| cached.read_at.elapsed() < TARGETS_TTL);
            // Held by nobody but the map: nothing of that user's is in flight or waiting.
            act.shared
                .per_user
                .borrow_mut()
                .retain(|_, slots| Rc::strong_count(slots) > 1);
        });
    }
}

impl Handler<TargetsChanged> for PushDispatcher {
    type Result = ();

    fn handle(&mut self, _: TargetsChanged, _: &mut Context<Self>) {
        self.shared.forget_targets();
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
                    self.shared.metrics.web_push.failed.fetch_add(1, Relaxed);
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

/// Gives each of the user's targets its first try at `notification`; what must be retried is
/// left to a task of its own.
async fn first_tries(shared: Rc<Shared>, user_id: i64, queued: Queued) {
    let targets = match shared.targets_of(user_id).await {
        Ok(targets) => targets,
        Err(err) => return log::error!("push: targets of user {user_id} unreadable: {err}"),
    };
    let notification = Rc::new(queued.notification);
    let mut web_payload = None;
    shared.metrics.push_notifications.fetch_add(1, Relaxed);
    let tries = targets.iter().map(|target| {
        let payload = match target {
            Target::Web(_) => web_payload
                .get_or_insert_with(|| Rc::new(notification.payload()))
                .clone(),
            Target::Fcm(device) => Rc::new(super::fcm::message(&notification, &device.token)),
        };
        let shared = shared.clone();
        let delivery = Delivery {
            user_id,
            target: target.clone(),
            notification: notification.clone(),
            payload,
            made_at: queued.made_at,
        };
        async move {
            if let Some(after) = attempt(&shared, &delivery, 0).await {
                actix_web::rt::spawn(retry(shared, delivery, after));
            }
        }
    });
    futures_util::future::join_all(tries).await;
}

/// Why a try failed, and when the provider asked to be tried again.
struct TryAgain {
    why: String,
    after: Option<Duration>,
}

/// One try; `Some` when it should be tried again.
async fn attempt(shared: &Shared, delivery: &Delivery, tried_before: usize) -> Option<TryAgain> {
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
    let target = &delivery.target;
    let counters = shared.counters(target);
    match outcome {
        Outcome::Delivered => {
            counters.sent.fetch_add(1, Relaxed);
            counters.delivery.observe(delivery.made_at.elapsed());
            None
        }
        Outcome::Gone => {
            log::info!("push: {target} is gone, deleting it");
            if let Err(err) = shared.delete(target).await {
                log::error!("push: could not delete {target}: {err}");
            }
            // After the delete: a read of the targets that ran beside it is not kept.
            shared.forget_targets();
            counters.removed.fetch_add(1, Relaxed);
            None
        }
        Outcome::Blocked(why) => {
            log::warn!(
                "push: not contacting {target} of user {}: {why}",
                delivery.user_id
            );
            counters.blocked.fetch_add(1, Relaxed);
            None
        }
        Outcome::Failed(why) => {
            log::warn!("push: {target} refused the notification, giving up: {why}");
            counters.failed.fetch_add(1, Relaxed);
            None
        }
        Outcome::Retry { why, after } => {
            log::warn!("push: try {} to {target} failed: {why}", tried_before + 1);
            Some(TryAgain { why, after })
        }
    }
}

/// The tries after the first, `RETRY_DELAYS` apart or as the provider asked.
async fn retry(shared: Rc<Shared>, delivery: Delivery, mut last: TryAgain) {
    for (tried, delay) in RETRY_DELAYS.into_iter().enumerate() {
        tokio::time::sleep(last.after.unwrap_or(delay)).await;
        match attempt(&shared, &delivery, tried + 1).await {
            Some(again) => last = again,
            None => return,
        }
    }
    log::warn!("push: gave up on {}: {}", delivery.target, last.why);
    shared
        .counters(&delivery.target)
        .failed
        .fetch_add(1, Relaxed);
}

async fn send_once(shared: &Shared, delivery: &Delivery) -> Outcome {
    match &delivery.target {
        Target::Web(subscription) => {
            shared
                .web
                .send(
                    &shared.http,
                    subscription,
                    &delivery.notification,
                    &delivery.payload,
                )
                .await
        }
        Target::Fcm(_) => match &shared.fcm {
            Some(fcm) => {
                fcm.send(&shared.http, &shared.metrics, &delivery.payload)
                    .await
            }
            // Devices are only read while FCM is on.
            None => Outcome::Failed("FCM is off".into()),
        },
    }
}
