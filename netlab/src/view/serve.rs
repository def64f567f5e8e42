//! `netlab serve`: the read-only web view (effects). axum routes the
//! requests; hyper's HTTP/1 connection does the parsing, with a bound on
//! the request head and on the time to send it. Every route is GET: nothing
//! here changes a lab.
//!
//! Limits, so a slow or abusive client cannot hurt others: at most
//! [`MAX_CONNECTIONS`] connections (more are closed at once), a request head
//! of at most [`MAX_HEAD`] bytes sent within [`HEAD_TIMEOUT`], no request
//! bodies, [`MAX_WORK`] requests reading the system at a time, each within
//! [`WORK_TIMEOUT`], and a connection lives at most [`CONNECTION_LIFETIME`]
//! (a client that never reads its answers is dropped then).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use axum::{
    extract::{Path, Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::get,
    Json, Router,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use serde_json::{json, Value};
use tokio::{net::TcpListener, sync::Semaphore};

use super::{graph::Graph, live, metrics, svg};
use crate::{cli, dataplane, state::LabState};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9480";
pub const MAX_CONNECTIONS: usize = 256;
pub const MAX_HEAD: usize = 16 * 1024;
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_WORK: usize = 4;
pub const WORK_TIMEOUT: Duration = Duration::from_secs(15);
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

const PAGE: &str = include_str!("page.html");

pub struct Options {
    pub listen: SocketAddr,
    /// The lab host: serve its labs, from inside its namespace.
    pub host_netns: Option<String>,
    /// Only this lab.
    pub name: Option<String>,
}

#[derive(Clone)]
struct App {
    host_netns: Option<String>,
    name: Option<String>,
    work: Arc<Semaphore>,
    loopback_only: bool,
}

/// Serve until killed. With a lab host namespace, the whole process enters
/// it first (before any thread starts), so the socket listens there.
pub fn run(opts: Options) -> Result<()> {
    if let Some(ns) = &opts.host_netns {
        let ns = crate::netns::Netns::open(ns)?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .context("entering the lab host's namespace")?;
    }
    if !opts.listen.ip().is_loopback() {
        eprintln!(
            "netlab: WARNING: serving on {}, which other machines may reach: the view is \
             read-only, but it shows the labs' addresses, flows and counters to anyone who connects",
            opts.listen
        );
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(serve(opts))
}

fn router(app: App) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics_text))
        .route("/api/labs", get(labs))
        .route("/api/labs/{name}/{what}", get(lab_part))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such page".into()) })
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

async fn serve(opts: Options) -> Result<()> {
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let app = App {
        host_netns: opts.host_netns.clone(),
        name: opts.name,
        work: Arc::new(Semaphore::new(MAX_WORK)),
        loopback_only: opts.listen.ip().is_loopback(),
    };
    let where_ = match &opts.host_netns {
        Some(n) => format!("lab host netns {n}"),
        None => "this namespace".into(),
    };
    eprintln!(
        "netlab: the view of the labs on {where_} at http://{}/ (metrics at /metrics)",
        listener.local_addr()?
    );
    let service = TowerToHyperService::new(router(app));
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of descriptors or the like: pause instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            continue; // dropping the stream closes it
        };
        let service = service.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            drop(permit);
        });
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Refuses what a read-only view never takes (bodies; on loopback, a Host
/// that is a name other than localhost, as a DNS-rebinding page would send),
/// and marks every answer as not to be cached, sniffed or framed.
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "requests have no body here".into(),
        );
    }
    if app.loopback_only && !local_host_header(req.headers().get(header::HOST)) {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "the view answers to localhost only".into(),
        );
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'"),
    );
    resp
}

/// `localhost` or an address literal, with or without a port.
fn local_host_header(host: Option<&HeaderValue>) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return true; // HTTP/1.0 without Host: not a browser's request
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split(']')
                .next()
                .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Runs `f` when one of the [`MAX_WORK`] slots is free, within [`WORK_TIMEOUT`].
async fn with_work<F: std::future::Future<Output = Response>>(app: &App, f: F) -> Response {
    let work = async {
        let _slot = app.work.acquire().await;
        f.await
    };
    tokio::time::timeout(WORK_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "reading the system took too long".into(),
            )
        })
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn metrics_text(State(app): State<App>) -> Response {
    with_work(&app, async {
        let mut figures = Vec::new();
        for state in live::labs_on(app.host_netns.as_deref(), app.name.as_deref()) {
            figures.push(live::lab_figures(&state).await);
        }
        (
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            metrics::exposition(&figures),
        )
            .into_response()
    })
    .await
}

async fn labs(State(app): State<App>) -> Response {
    let rows: Vec<Value> = live::labs_on(app.host_netns.as_deref(), app.name.as_deref())
        .iter()
        .map(|s| {
            json!({
                "lab": s.lab.name,
                "host_netns": s.host_netns,
                "sandbox": s.sandbox,
                "nodes": s.lab.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>(),
                "dataplane": dataplane::read_info(&s.lab.name).is_some(),
            })
        })
        .collect();
    Json(rows).into_response()
}

async fn lab_part(State(app): State<App>, Path((name, what)): Path<(String, String)>) -> Response {
    let Some(state) = live::labs_on(app.host_netns.as_deref(), Some(&name)).pop() else {
        return error(StatusCode::NOT_FOUND, format!("no lab {name} is up here"));
    };
    if app.name.as_deref().is_some_and(|n| n != name) {
        return error(
            StatusCode::NOT_FOUND,
            format!("this view serves lab {} only", app.name.unwrap_or_default()),
        );
    }
    with_work(&app, async {
        part(&state, &what).await.unwrap_or_else(|e| e)
    })
    .await
}

/// One lab's page of the API; `Err` is the answer when it cannot be read.
async fn part(state: &LabState, what: &str) -> Result<Response, Response> {
    let name = &state.lab.name;
    let failed = |e: anyhow::Error| error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"));
    let no_dataplane = || {
        error(
            StatusCode::NOT_FOUND,
            format!("lab {name} has no NAT dataplane"),
        )
    };
    Ok(match what {
        "status" => {
            let seen = cli::observe(state, None).await.map_err(failed)?;
            Json(cli::status_json(&seen)).into_response()
        }
        "nat" => {
            dataplane::read_info(name).ok_or_else(no_dataplane)?;
            Json(dataplane::commands::flows(name).map_err(failed)?).into_response()
        }
        "stats" => {
            dataplane::read_info(name).ok_or_else(no_dataplane)?;
            let stats = dataplane::commands::read_stats(name).map_err(failed)?;
            Json(dataplane::commands::stats_json(&stats)).into_response()
        }
        "links" => Json(live::link_figures(state).await.map_err(failed)?).into_response(),
        "figures" => Json(live::lab_figures(state).await).into_response(),
        "graph.svg" | "graph.json" => {
            let links = live::link_figures(state).await.unwrap_or_default();
            let g = Graph::of(
                &live::drawn_lab(state),
                Some(&live::graph_live(state, &links)),
            );
            if what == "graph.svg" {
                ([(header::CONTENT_TYPE, "image/svg+xml")], svg::to_svg(&g)).into_response()
            } else {
                ([(header::CONTENT_TYPE, "application/json")], g.to_json()).into_response()
            }
        }
        _ => error(StatusCode::NOT_FOUND, format!("no page {what} for a lab")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_must_be_local_on_loopback() {
        let ok = |h: &str| local_host_header(Some(&HeaderValue::from_str(h).unwrap()));
        for h in [
            "localhost",
            "localhost:9480",
            "127.0.0.1:9480",
            "[::1]:9480",
            "LOCALHOST",
        ] {
            assert!(ok(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:9480",
            "127.0.0.1.evil.example",
            "[evil]:1",
        ] {
            assert!(!ok(h), "{h}");
        }
    }
}
