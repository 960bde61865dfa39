//! The extractors that turn a verified token into the caller (identity never comes from a
//! request body or socket payload), and the client's address for per-address limits.
use std::net::{IpAddr, Ipv4Addr};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;

use crate::auth::token::TokenInfo;
use crate::auth::{Member, throttle};
use crate::error::ApiError;
use crate::state::AppState;

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
