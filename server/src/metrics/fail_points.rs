//! The status server's `/fail` routes: the engine's fail points armed in a running
//! process, for fault injection from outside it (the chaos suite drops the appends that
//! would create a new replica this way).
//!
//! - `GET /fail`: the armed points, one line each (`NAME ACTION HITS`).
//! - `PUT /fail/NAME` with `trigger`, `pause` or `panic` as the body: arms the point.
//! - `DELETE /fail/NAME`: disarms it, letting threads paused there go on.
//!
//! Anyone who reaches the status address could break the node through these routes,
//! so they answer only when the node's configuration enables them
//! (`enable_fail_points` under `[store]`, off by default, for test clusters only);
//! otherwise every `/fail` request gets 403 saying how to enable them.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use tessera_engine::failpoint::{self, Action};

/// The `/fail` routes; `enabled` says whether they act or refuse.
pub(super) fn routes<S>(enabled: bool) -> Router<S> {
    Router::new()
        .route("/fail", get(list))
        .route("/fail/{*name}", axum::routing::put(arm).delete(release))
        .with_state(Enabled(enabled))
}

#[derive(Clone, Copy)]
struct Enabled(bool);

type Answer = (StatusCode, String);

fn refusal() -> Answer {
    (
        StatusCode::FORBIDDEN,
        "fail points are disabled on this node: a store enables them with enable_fail_points = true \
         under [store] in its configuration file (test clusters only)\n"
            .into(),
    )
}

async fn list(State(Enabled(enabled)): State<Enabled>) -> Answer {
    if !enabled {
        return refusal();
    }
    let lines: String = failpoint::armed_globally()
        .into_iter()
        .map(|(name, action, hits)| format!("{name} {} {hits}\n", action.name()))
        .collect();
    (StatusCode::OK, lines)
}

async fn arm(State(Enabled(enabled)): State<Enabled>, Path(name): Path<String>, body: String) -> Answer {
    if !enabled {
        return refusal();
    }
    let Some(action) = Action::from_name(body.trim()) else {
        return (
            StatusCode::BAD_REQUEST,
            format!("the body must be trigger, pause or panic, not {:?}\n", body.trim()),
        );
    };
    match failpoint::arm_by_name(&name, action) {
        Ok(name) => {
            tracing::warn!(fail_point = name, action = action.name(), "fail point armed from outside");
            (StatusCode::OK, format!("armed {name}: {}\n", action.name()))
        }
        Err(unknown) => (StatusCode::NOT_FOUND, format!("{unknown}\n")),
    }
}

async fn release(State(Enabled(enabled)): State<Enabled>, Path(name): Path<String>) -> Answer {
    if !enabled {
        return refusal();
    }
    match failpoint::release_by_name(&name) {
        Ok(was_armed) => {
            tracing::warn!(fail_point = %name, was_armed, "fail point released from outside");
            let state = if was_armed { "released" } else { "was not armed" };
            (StatusCode::OK, format!("{name}: {state}\n"))
        }
        Err(unknown) => (StatusCode::NOT_FOUND, format!("{unknown}\n")),
    }
}
