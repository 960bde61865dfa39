//! Operations endpoints: health and metrics.
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics));
}

/// The `GET /healthz` body.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    operation_id = "healthz",
    summary = "Health check",
    responses(
        (status = 200, description = "The database answers reads, and the last write succeeded", body = Health, example = json!({"status": "ok"})),
        (status = 503, description = "`unavailable`: the database does not answer within 2 s, the last write failed, or no write succeeded for 10 s while writes were waiting", body = ErrorBody),
    )
)]
async fn healthz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let health = &state.db.health;
    if let Some(problem) = health.problem() {
        // A failed write is reported until a write succeeds; a probe of our own, now and then,
        // notices the database is back when no client writes.
        let recovered = health.claim_probe() && state.db.probe_write().await.is_ok();
        if !recovered {
            return Err(unavailable(problem));
        }
    }
    match state.db.ping().await {
        Ok(()) => Ok(HttpResponse::Ok().json(Health { status: "ok" })),
        Err(err) => {
            log::warn!("health check failed: {err}");
            Err(unavailable("the database does not answer"))
        }
    }
}

fn unavailable(why: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, why)
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "Prometheus text: open SSE and WS sessions, families loaded, messages committed, persister batches, pushes sent/failed",
            content_type = "text/plain; version=0.0.4", body = String),
    )
)]
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
