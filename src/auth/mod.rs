//! Identity: passwords, tokens, throttling and the extractors that turn a verified token into the
//! caller. Identity never comes from a request body or socket payload.
pub mod password;
pub mod revocation;
pub mod sessions;
pub mod throttle;
pub mod token;

use std::net::{IpAddr, Ipv4Addr};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use dashmap::DashMap;
use futures_util::future::LocalBoxFuture;
use sea_orm::EntityTrait;

use crate::app::AppState;
use crate::error::ApiError;
use crate::model::Role;
use crate::store::Db;
use crate::store::entities::user;
use token::TokenInfo;

/// The caller as the server knows them.
#[derive(Clone, Debug)]
pub struct Member {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub family_id: Option<i64>,
}

impl Member {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role == role {
            Ok(())
        } else {
            Err(ApiError::forbidden_role(format!(
                "only a {} can do this",
                role.as_str()
            )))
        }
    }

    pub fn family(&self) -> Result<i64, ApiError> {
        self.family_id.ok_or_else(ApiError::not_in_family)
    }
}

/// Caches members once they have a family: membership never changes after pairing, so the cache
/// is never stale. Members without a family are read from the database on every request.
#[derive(Default)]
pub struct MemberCache {
    paired: DashMap<i64, Member>,
}

impl MemberCache {
    pub async fn get(&self, db: &Db, user_id: i64) -> Result<Option<Member>, ApiError> {
        if let Some(member) = self.paired.get(&user_id) {
            return Ok(Some(member.clone()));
        }
        let Some(row) = user::Entity::find_by_id(user_id).one(&db.read).await? else {
            return Ok(None);
        };
        let member = member_of(&row);
        if member.family_id.is_some() {
            self.paired.insert(user_id, member.clone());
        }
        Ok(Some(member))
    }
}

pub fn member_of(row: &user::Model) -> Member {
    Member {
        id: row.id,
        name: row.name.clone(),
        role: Role::parse(&row.role).unwrap_or(Role::Child),
        family_id: row.family_id,
    }
}

/// The caller, from `Authorization: Bearer <token>`.
pub struct AuthUser(pub Member);

/// The caller, from the header or `?access_token=` (EventSource and browser WebSocket cannot set
/// headers); used only on the streaming endpoints, as API.md allows. The token tells the stream
/// when to end.
pub struct StreamAuthUser(pub Member, pub TokenInfo);

/// The caller's bearer token itself (for logout).
pub struct AuthToken(pub TokenInfo);

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn query_token(req: &HttpRequest) -> Option<String> {
    web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .ok()?
        .get("access_token")
        .cloned()
}

fn authenticate(
    req: &HttpRequest,
    token: Option<String>,
) -> LocalBoxFuture<'static, Result<(Member, TokenInfo), ApiError>> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    Box::pin(async move {
        let state = state.ok_or_else(|| ApiError::internal("app state missing"))?;
        let token = token.ok_or_else(|| ApiError::unauthorized("a bearer token is required"))?;
        let info = state
            .tokens
            .verify(&token)
            .ok_or_else(|| ApiError::unauthorized("the token is invalid or expired"))?;
        if state.revocations.is_revoked(&info.id).await? {
            return Err(ApiError::unauthorized("the token was revoked (logged out)"));
        }
        let member = state
            .members
            .get(&state.db, info.user_id)
            .await?
            .ok_or_else(|| ApiError::unauthorized("the token's user does not exist"))?;
        Ok((member, info))
    })
}

/// The client's address for per-address limits: the socket peer's, or with `--trust-proxy` the
/// last hop of `X-Forwarded-For` (the one our proxy added; earlier hops are the client's word).
pub fn client_ip(req: &HttpRequest, trust_proxy: bool) -> IpAddr {
    let forwarded = trust_proxy
        .then(|| {
            let last = req.headers().get_all("x-forwarded-for").last()?;
            let hop = last.to_str().ok()?.rsplit(',').next()?.trim();
            hop.parse::<IpAddr>()
                .ok()
                .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        })
        .flatten();
    let ip = forwarded
        .or_else(|| req.peer_addr().map(|a| a.ip()))
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    throttle::address_key(ip)
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let fut = authenticate(req, bearer(req));
        Box::pin(async move { fut.await.map(|(member, _)| AuthUser(member)) })
    }
}

impl FromRequest for AuthToken {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let fut = authenticate(req, bearer(req));
        Box::pin(async move { fut.await.map(|(_, token)| AuthToken(token)) })
    }
}

impl FromRequest for StreamAuthUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let fut = authenticate(req, bearer(req).or_else(|| query_token(req)));
        Box::pin(async move {
            fut.await
                .map(|(member, token)| StreamAuthUser(member, token))
        })
    }
}
