//! Request routing and the REST handlers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::discovery;
use crate::error::ApiError;
use crate::log::{RequestRecord, Verb};
use crate::query::Query;
use crate::resources::{lookup_path, ResourceId, RESOURCES};
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::Shared;
use crate::store::{Filter, ListPage, PatchType, Store, UpdateMode};
use crate::watch::{self, WatchParams};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body accepted.
const MAX_BODY: usize = 64 << 20;
/// Watch timeout when the client gives none (the apiserver picks 30 to 60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

fn json_response(code: u16, bytes: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn ok_json(v: &Value) -> Response<Body> {
    json_response(
        200,
        serde_json::to_vec(v).expect("a Value always serializes"),
    )
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(
        e.code,
        serde_json::to_vec(&e.to_status()).expect("a Value always serializes"),
    )
}

/// What a resource path names.
struct Target {
    res: ResourceId,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_target(group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let find =
        |plural: &str| lookup_path(group, version, plural).ok_or_else(ApiError::path_not_found);
    let namespaced_form = rest.len() >= 3
        && rest[0] == "namespaces"
        && lookup_path(group, version, rest[2]).is_some_and(|r| RESOURCES[r].namespaced);
    let (res, namespace, tail) = if namespaced_form {
        (find(rest[2])?, Some(rest[1].to_string()), &rest[3..])
    } else {
        let res = find(rest.first().copied().unwrap_or(""))?;
        if RESOURCES[res].namespaced && rest.len() > 1 {
            return Err(ApiError::path_not_found());
        }
        (res, None, &rest[1..])
    };
    if namespace.as_deref() == Some("") {
        return Err(ApiError::path_not_found());
    }
    let (name, status) = match tail {
        [] => (None, false),
        [name] => (Some(name.to_string()), false),
        [name, "status"] => (Some(name.to_string()), true),
        _ => return Err(ApiError::path_not_found()),
    };
    if name.as_deref() == Some("") {
        return Err(ApiError::path_not_found());
    }
    Ok(Target {
        res,
        namespace,
        name,
        status,
    })
}

fn filter_from(q: &Query, namespace: Option<String>) -> Result<Filter, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    Ok(Filter {
        namespace,
        labels,
        fields,
    })
}

fn list_body(res: ResourceId, page: &ListPage) -> Vec<u8> {
    let r = &RESOURCES[res];
    let mut meta = json!({"resourceVersion": page.rv.to_string()});
    if let Some(c) = &page.continue_token {
        meta["continue"] = json!(c);
    }
    let mut out = Vec::with_capacity(256 + page.items.len() * 512);
    out.extend_from_slice(b"{\"kind\":");
    serde_json::to_writer(&mut out, &r.list_kind()).expect("string");
    out.extend_from_slice(b",\"apiVersion\":");
    serde_json::to_writer(&mut out, &r.api_version()).expect("string");
    out.extend_from_slice(b",\"metadata\":");
    serde_json::to_writer(&mut out, &meta).expect("value");
    out.extend_from_slice(b",\"items\":[");
    for (i, it) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &**it).expect("value");
    }
    out.extend_from_slice(b"]}");
    out
}

fn handle_list(shared: &Shared, t: &Target, q: &Query) -> Result<Response<Body>, ApiError> {
    let filter = filter_from(q, t.namespace.clone())?;
    let limit = q.u64("limit")?.map(|l| l as usize);
    let cont = q.value("continue");
    let rv = q.resource_version()?;
    if cont.is_some() && rv.is_some_and(|v| v != 0) {
        return Err(ApiError::bad_request(
            "specifying resource version is not allowed when using continue",
        ));
    }
    let exact = match q.value("resourceVersionMatch") {
        None | Some("NotOlderThan") => None,
        Some("Exact") => match rv {
            Some(v) if v != 0 => Some(v),
            _ => {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch \"Exact\" requires a non-zero resourceVersion",
                ))
            }
        },
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unsupported resourceVersionMatch {other:?}"
            )))
        }
    };
    // Only the page (shared pointers) is taken under the lock; serializing happens outside.
    let page = shared
        .store
        .lock()
        .list(t.res, &filter, limit, cont, exact)?;
    Ok(json_response(200, list_body(t.res, &page)))
}

fn handle_watch(shared: &Arc<Shared>, t: &Target, q: &Query) -> Result<Response<Body>, ApiError> {
    let mut filter = filter_from(q, t.namespace.clone())?;
    if let Some(name) = &t.name {
        // Watching a single object by path (deprecated, still served).
        filter.fields.0.push(crate::selector::FieldReq {
            path: "metadata.name".into(),
            value: name.clone(),
            negated: false,
        });
    }
    let rv = q.resource_version()?;
    let send_initial = q.bool("sendInitialEvents")?;
    let bookmarks = q.bool("allowWatchBookmarks")?.unwrap_or(false);
    if send_initial == Some(true) && q.value("resourceVersionMatch") != Some("NotOlderThan") {
        return Err(ApiError::bad_request(
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    let timeout = match q.u64("timeoutSeconds")? {
        None | Some(0) => DEFAULT_WATCH_TIMEOUT,
        Some(s) => Duration::from_secs(s),
    };
    // Absent or "0": the current state as ADDED events, then changes (as the apiserver's watch
    // cache does). sendInitialEvents=true: the same plus the initial-events-end bookmark.
    let from = match (send_initial, rv) {
        (Some(true), _) | (None, None | Some(0)) => None,
        (Some(false), None | Some(0)) => Some(shared.store.lock().resource_version()),
        (_, Some(v)) => Some(v),
    };
    let params = WatchParams {
        res: t.res,
        filter,
        bookmarks,
        timeout,
    };
    let stream = watch::start(shared.clone(), params, from, send_initial == Some(true));
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn patch_type(content_type: &str) -> Result<PatchType, ApiError> {
    match content_type.split(';').next().unwrap_or("").trim() {
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// DeleteOptions preconditions, if a body was sent.
fn delete_preconditions(body: &[u8]) -> Result<(Option<String>, Option<String>), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, None));
    }
    let v = parse_body(body)?;
    let get = |k: &str| {
        v.pointer(&format!("/preconditions/{k}"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Ok((get("resourceVersion"), get("uid")))
}

/// Runs a write; with `dry` (dryRun=All) on a copy of the store, so nothing changes.
fn write<R>(shared: &Shared, dry: bool, f: impl FnOnce(&mut Store) -> R) -> R {
    if dry {
        let mut copy = shared.store.lock().clone();
        f(&mut copy)
    } else {
        shared.write(f)
    }
}

struct Routed {
    verb: Verb,
    resource: Option<String>,
    result: Result<Response<Body>, ApiError>,
}

/// The parts of a request the handlers need.
struct Req<'a> {
    method: &'a Method,
    q: &'a Query,
    content_type: &'a str,
    body: &'a [u8],
}

fn route_resource(
    shared: &Arc<Shared>,
    req: &Req<'_>,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Routed {
    let Req {
        method,
        q,
        content_type,
        body,
    } = *req;
    let t = match parse_target(group, version, rest) {
        Ok(t) => t,
        Err(e) => {
            return Routed {
                verb: Verb::Other,
                resource: None,
                result: Err(e),
            }
        }
    };
    let rt = &RESOURCES[t.res];
    let resource = Some(rt.plural.to_string());
    let watching = match q.bool("watch") {
        Ok(w) => w.unwrap_or(false),
        Err(e) => {
            return Routed {
                verb: Verb::Other,
                resource,
                result: Err(e),
            }
        }
    };
    let ns = t.namespace.clone().unwrap_or_default();
    let dry = match q.value("dryRun") {
        None => false,
        Some("All") => true,
        Some(other) => {
            let e =
                ApiError::bad_request(format!("unsupported dryRun value {other:?}: only \"All\""));
            return Routed {
                verb: Verb::Other,
                resource,
                result: Err(e),
            };
        }
    };
    let (verb, result) = match (&t.name, method.clone()) {
        (_, Method::GET) if watching && !t.status => (Verb::Watch, handle_watch(shared, &t, q)),
        (None, Method::GET) => (Verb::List, handle_list(shared, &t, q)),
        (None, Method::POST) => {
            let result = if rt.namespaced && t.namespace.is_none() {
                Err(ApiError::method_not_allowed("POST"))
            } else {
                parse_body(body)
                    .and_then(|obj| write(shared, dry, |s| s.create(t.res, &ns, obj)))
                    .map(|o| json_response(201, serde_json::to_vec(&*o).expect("value")))
            };
            (Verb::Create, result)
        }
        (None, Method::DELETE) => {
            let result = filter_from(q, t.namespace.clone()).map(|filter| {
                let deleted = write(shared, dry, |s| {
                    let keys: Vec<(String, String)> = s
                        .all(t.res)
                        .filter(|o| filter.matches(&key_of(o, rt.namespaced), o))
                        .map(|o| key_of(o, rt.namespaced))
                        .collect();
                    keys.iter()
                        .filter_map(|(ns, name)| s.delete(t.res, ns, name, None, None).ok())
                        .collect::<Vec<_>>()
                });
                let rv = shared.store.lock().resource_version();
                json_response(
                    200,
                    list_body(
                        t.res,
                        &ListPage {
                            rv,
                            items: deleted,
                            continue_token: None,
                        },
                    ),
                )
            });
            (Verb::DeleteCollection, result)
        }
        (Some(name), Method::GET) => {
            let result = shared
                .store
                .lock()
                .get(t.res, &ns, name)
                .map(|o| ok_json(&o))
                .ok_or_else(|| ApiError::not_found(rt, name));
            (Verb::Get, result)
        }
        (Some(name), Method::PUT) => {
            let mode = if t.status {
                UpdateMode::Status
            } else {
                UpdateMode::Main
            };
            let result = parse_body(body)
                .and_then(|obj| write(shared, dry, |s| s.update(t.res, &ns, name, obj, mode)))
                .map(|o| ok_json(&o));
            (Verb::Update, result)
        }
        (Some(name), Method::PATCH) => {
            let result = patch_type(content_type)
                .and_then(|pt| parse_body(body).map(|b| (pt, b)))
                .and_then(|(pt, b)| {
                    write(shared, dry, |s| s.patch(t.res, &ns, name, pt, &b, t.status))
                })
                .map(|o| ok_json(&o));
            (Verb::Patch, result)
        }
        (Some(name), Method::DELETE) if !t.status => {
            let result = delete_preconditions(body)
                .and_then(|(rv, uid)| {
                    write(shared, dry, |s| {
                        s.delete(t.res, &ns, name, rv.as_deref(), uid.as_deref())
                    })
                })
                .map(|o| ok_json(&o));
            (Verb::Delete, result)
        }
        (_, m) => (Verb::Other, Err(ApiError::method_not_allowed(m.as_str()))),
    };
    Routed {
        verb,
        resource,
        result,
    }
}

fn key_of(o: &Value, namespaced: bool) -> (String, String) {
    let m = |f: &str| {
        o.pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (
        if namespaced {
            m("namespace")
        } else {
            String::new()
        },
        m("name"),
    )
}

fn route(shared: &Arc<Shared>, req: &Req<'_>, path: &str) -> Routed {
    let method = req.method;
    let segs: Vec<&str> = path
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .collect();
    let discovery = |v: Option<Value>| Routed {
        verb: Verb::Discovery,
        resource: None,
        result: match (method, v) {
            (&Method::GET, Some(v)) => Ok(ok_json(&v)),
            (&Method::GET, None) => Err(ApiError::path_not_found()),
            (m, _) => Err(ApiError::method_not_allowed(m.as_str())),
        },
    };
    if let ["apis", group, ..] = segs.as_slice() {
        if shared.hidden_groups.lock().iter().any(|h| h == group) {
            return Routed {
                verb: Verb::Other,
                resource: None,
                result: Err(ApiError::path_not_found()),
            };
        }
    }
    match segs.as_slice() {
        ["version"] => discovery(Some(discovery::version())),
        ["healthz" | "readyz" | "livez"] => Routed {
            verb: Verb::Discovery,
            resource: None,
            result: Ok({
                let mut r = Response::new(full("ok"));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                r
            }),
        },
        ["api"] => discovery(Some(discovery::api_versions(&shared.addr.to_string()))),
        ["apis"] => discovery(Some(discovery::api_group_list(
            &shared.hidden_groups.lock(),
        ))),
        ["api", "v1"] => discovery(discovery::api_resource_list("", "v1")),
        ["apis", group] => discovery(discovery::api_group(group)),
        ["apis", group, version] => discovery(discovery::api_resource_list(group, version)),
        ["api", "v1", rest @ ..] => route_resource(shared, req, "", "v1", rest),
        ["apis", group, version, rest @ ..] => route_resource(shared, req, group, version, rest),
        _ => Routed {
            verb: Verb::Other,
            resource: None,
            result: Err(ApiError::path_not_found()),
        },
    }
}

/// Serves one HTTP request. Never panics on bad input: errors become `Status` responses.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    if *shared.down_tx.borrow() {
        // Down: serve nothing; the connection is being cut (see server::serve_connection).
        std::future::pending::<()>().await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("reading the request body failed: {e}"),
        )),
    };
    let routed = match (body, Query::parse(&raw_query)) {
        (Ok(body), Ok(q)) => route(
            &shared,
            &Req {
                method: &method,
                q: &q,
                content_type: &content_type,
                body: &body,
            },
            &path,
        ),
        (Err(e), _) | (_, Err(e)) => Routed {
            verb: Verb::Other,
            resource: None,
            result: Err(e),
        },
    };
    let resp = routed.result.unwrap_or_else(|e| error_response(&e));
    tracing::debug!(%method, %path, query = %raw_query, status = resp.status().as_u16(), "request");
    shared.log.lock().record(RequestRecord {
        method: method.to_string(),
        path,
        query: raw_query,
        verb: routed.verb,
        resource: routed.resource,
        status: resp.status().as_u16(),
    });
    resp
}
