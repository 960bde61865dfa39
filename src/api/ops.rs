//! Operations endpoints: health and metrics.
use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::app::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics));
}

async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    match state.db.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ok"})),
        Err(err) => {
            log::warn!("health check failed: {err}");
            HttpResponse::ServiceUnavailable().json(json!({
                "error": "unavailable",
                "message": "the database does not answer",
            }))
        }
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
